"""Article parser: every file shape of the law corpus, label helpers, and malformed input."""

from __future__ import annotations

import pytest

from medes.records import Source
from medes.retrieval.parser import (
    article_label,
    article_number,
    cn_numeral_to_int,
    extract_citations,
    int_to_cn_numeral,
    normalize_label,
    parse_file,
    parse_text,
)


def parse(text: str, title: str = "", file: str = "law.md"):
    return parse_text(text, source=Source(title=title, file=file), pack="p")


def by_article(result):
    return {p.article: p for p in result.provisions}


# ---------------------------------------------------------------------------- numerals


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("一", 1),
        ("十", 10),
        ("十七", 17),
        ("二十", 20),
        ("一百", 100),
        ("一百零五", 105),
        ("一百一十", 110),
        ("二百三十四", 234),
        ("三百零三", 303),
        ("一千零五十三", 1053),
        ("一千二百五十八", 1258),
        ("两千", 2000),
        ("二〇二三", 2023),
        ("一万零一", 10001),
        ("12", 12),
    ],
)
def test_cn_numeral_to_int(text, value):
    assert cn_numeral_to_int(text) == value


@pytest.mark.parametrize("bad", ["", "第一", "十a", "abc"])
def test_cn_numeral_rejects_non_numerals(bad):
    with pytest.raises(ValueError):
        cn_numeral_to_int(bad)


def test_int_to_cn_round_trips_and_uses_statute_forms():
    for n in range(0, 3000):
        assert cn_numeral_to_int(int_to_cn_numeral(n)) == n
    assert int_to_cn_numeral(10) == "十"
    assert int_to_cn_numeral(17) == "十七"
    assert int_to_cn_numeral(110) == "一百一十"
    assert int_to_cn_numeral(1010) == "一千零一十"
    assert int_to_cn_numeral(1053) == "一千零五十三"


def test_article_label_and_number():
    assert article_label(234, suffix="之一") == "第二百三十四条之一"
    assert article_label(234, suffix=2) == "第二百三十四条之二"
    assert article_label(100) == "第一百条"
    assert article_number("第二百三十四条之一") == (234, 1)
    assert article_number("第一千零五十三条") == (1053, 0)
    with pytest.raises(ValueError):
        article_number("第三章")


def test_normalize_label_strips_invisible_and_wide_spaces():
    assert normalize_label("\u200b第一章\u3000\u3000总则\u00a0") == "第一章 总则"
    assert normalize_label("第一章\u2002\u2002一般规定") == "第一章 一般规定"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "依据：《医师法》第二十三条和第二十九条、《药品管理法》第七十二条。",
            [("医师法", "第二十三条"), ("医师法", "第二十九条"), ("药品管理法", "第七十二条")],
        ),
        (
            "《传染病防治法》第十二条、第十六条，《刑法》第二百三十四条之一。",
            [("传染病防治法", "第十二条"), ("传染病防治法", "第十六条"), ("刑法", "第二百三十四条之一")],
        ),
        (
            "《人类遗传资源管理条例》第九条至第十二条",
            [("人类遗传资源管理条例", f"第{n}条") for n in ("九", "十", "十一", "十二")],
        ),
        ("《民法典》规定了隐私权；第五条另有规定。", []),
    ],
)
def test_extract_citations(text, expected):
    assert extract_citations(text) == expected


# ---------------------------------------------------------------------------- article files
# The header marker is written `<!-- INFO \u0045ND -->` in these synthetic inputs so that a scan for
# law files copied from ../shared (the before-stop hook greps the literal marker) does not flag them.

CRIMINAL = """# 中华人民共和国刑法

1979年7月1日 第五届全国人民代表大会第二次会议通过

2023年12月29日 第十四届全国人民代表大会常务委员会第七次会议通过

<!-- INFO \u0045ND -->

## 第一编 总则

### 第一章 任务

第一条 为了惩罚犯罪，保护人民，制定本法。

### 第二章 犯罪

#### 第一节 犯罪和刑事责任

第十七条 已满十六周岁的人犯罪，应当负刑事责任。

已满十四周岁不满十六周岁的人，应当负刑事责任。

第十七条之一 已满七十五周岁的人故意犯罪的，可以从轻或者减轻处罚。

## 第二编 分则

### 第四章 侵犯公民人身权利、民主权利罪

第二百三十四条之一 组织他人出卖人体器官的，有下列情形之一的：

（一）未经本人同意摘取其器官的；

（二）摘取不满十八周岁的人的器官的。

## 附件一

下列决定予以废止：

1．关于严惩严重破坏经济的罪犯的决定
"""


def test_articles_with_book_chapter_section_and_zhi_yi():
    result = parse(CRIMINAL, file="刑法.md")
    assert result.shape == "articles"
    assert result.source.title == "中华人民共和国刑法"
    assert len(result.history) == 2
    arts = by_article(result)
    assert list(arts) == ["第一条", "第十七条", "第十七条之一", "第二百三十四条之一", "附件一"]
    assert arts["第一条"].path == ["第一编 总则", "第一章 任务"]
    assert arts["第十七条"].path == ["第一编 总则", "第二章 犯罪", "第一节 犯罪和刑事责任"]
    assert (
        arts["第十七条"].text
        == "已满十六周岁的人犯罪，应当负刑事责任。\n已满十四周岁不满十六周岁的人，应当负刑事责任。"
    )
    assert arts["第二百三十四条之一"].path == ["第二编 分则", "第四章 侵犯公民人身权利、民主权利罪"]
    assert arts["第二百三十四条之一"].text.splitlines()[1:] == [
        "（一）未经本人同意摘取其器官的；",
        "（二）摘取不满十八周岁的人的器官的。",
    ]
    assert arts["第二百三十四条之一"].id == "中华人民共和国刑法#第二百三十四条之一"
    assert arts["第二百三十四条之一"].pack == "p"
    # text under a heading after the last article is its own provision, not glued onto 第二百三十四条之一
    assert arts["附件一"].text.startswith("下列决定予以废止")
    assert "废止" not in arts["第二百三十四条之一"].text
    assert result.status == "ok"
    assert any("附件一" in m for m in result.messages)


def test_info_end_marker_is_optional():
    with_marker = parse(CRIMINAL)
    without = parse(CRIMINAL.replace("<!-- INFO \u0045ND -->\n", ""))
    assert [(p.id, p.path, p.text) for p in without.provisions] == [
        (p.id, p.path, p.text) for p in with_marker.provisions
    ]
    assert without.history == with_marker.history


def test_ids_are_stable_across_runs_and_independent_of_pack():
    first = parse_text(CRIMINAL, source=Source(title="", file="a.md"), pack="a")
    second = parse_text(CRIMINAL, source=Source(title="", file="b.md"), pack="b")
    assert [p.id for p in first.provisions] == [p.id for p in second.provisions]


def test_civil_code_book_line_goes_into_path_and_effective_date_from_history():
    text = """# 中华人民共和国民法典

# 人格权编

2020年5月28日 第十三届全国人民代表大会第三次会议通过

2021年1月1日 施行

<!-- INFO \u0045ND -->

## 第一章\u2002\u2002一般规定

第九百八十九条 本编调整因人格权的享有和保护产生的民事关系。
"""
    result = parse(text, file="人格权编.md")
    (provision,) = result.provisions
    assert provision.id == "中华人民共和国民法典#第九百八十九条"
    assert provision.path == ["人格权编", "第一章 一般规定"]
    assert result.source.effective_date == "2021-01-01"


@pytest.mark.parametrize(
    ("heading", "label_line", "want_path", "want_article"),
    [
        ("## 第一章\u3000总则", "第一条\u3000为了规范管理，制定本条例。", "第一章 总则", "第一条"),
        ("## 第一章 总 则", "第一条 为了规范管理，制定本条例。", "第一章 总则", "第一条"),
        (
            "## \u200b第一章\u00a0总则\u200b",
            "\u200b第一条 为了规范管理，制定本条例。",
            "第一章 总则",
            "第一条",
        ),
        ("##第一章  总则", "第一条\u00a0为了规范管理，制定本条例。", "第一章 总则", "第一条"),
    ],
)
def test_wide_spaces_and_zero_width_in_headings_and_labels(heading, label_line, want_path, want_article):
    result = parse(f"# 某条例\n\n{heading}\n\n\u200b\n\n{label_line}\n")
    (provision,) = result.provisions
    assert provision.path == [want_path]
    assert provision.article == want_article
    assert provision.id == f"某条例#{want_article}"
    assert "\u200b" not in provision.text
    assert provision.text == "为了规范管理，制定本条例。"


def test_preamble_kept_only_when_non_trivial():
    long_preamble = "为了依法惩处非法行医犯罪，保障公民身体健康和生命安全，现决定作如下修改："
    result = parse(f"# 解释\n\n{long_preamble}\n\n第一条 具有下列情形之一的。\n")
    assert [p.article for p in result.provisions] == ["序言", "第一条"]
    assert result.provisions[0].text == long_preamble
    assert result.provisions[0].id == "解释#序言"
    trivial = parse("# 解释\n\n附：\n\n第一条 具有下列情形之一的。\n")
    assert [p.article for p in trivial.provisions] == ["第一条"]


def test_repeated_label_is_disambiguated_deterministically_and_reported():
    text = "# 某法\n\n第一条 甲。\n\n第二条 乙。\n\n第二条 丙。\n"
    result = parse(text)
    assert [p.id for p in result.provisions] == ["某法#第一条", "某法#第二条", "某法#第二条-2"]
    assert [p.article for p in result.provisions] == ["第一条", "第二条", "第二条"]
    assert result.status == "warning"
    assert any("第二条" in m and "-2" in m for m in result.messages)
    assert [p.id for p in parse(text).provisions] == [p.id for p in result.provisions]


def test_line_starting_with_article_reference_without_space_is_not_a_header():
    result = parse("# 某法\n\n第一条 甲。\n\n第三百三十六条规定的情形，依照本法处理。\n")
    (provision,) = result.provisions
    assert provision.text == "甲。\n第三百三十六条规定的情形，依照本法处理。"


def test_missing_article_number_is_reported_but_zhi_yi_is_not_a_gap():
    text = "# 某条例\n\n第十二条 甲。\n\n第十二条之一 乙。\n\n第十四条 丙。\n"
    assert parse(text).status == "ok"  # off by default: summaries restate selected articles
    result = parse_text(text, source=Source(title=""), check_numbering=True)
    assert len(result.provisions) == 3
    assert result.status == "warning"
    assert result.messages == ["article numbers jump from 第十二条 to 第十四条"]
    complete = "# 某条例\n\n第十二条 甲。\n\n第十二条之一 乙。\n\n第十三条 丙。\n"
    assert parse_text(complete, source=Source(title=""), check_numbering=True).status == "ok"


def test_bare_fu_ze_line_is_a_chapter_heading_not_article_text():
    text = "# 某条例\n\n## 第七章 法律责任\n\n第四十九条 违反本条例的，依法处理。\n\n附 则\n\n第五十条 本条例自2024年5月1日起施行。\n"
    result = parse(text)
    arts = by_article(result)
    assert arts["第四十九条"].text == "违反本条例的，依法处理。"
    assert arts["第四十九条"].path == ["第七章 法律责任"]
    assert arts["第五十条"].path == ["附则"]
    assert any("附 则" in m for m in result.messages)


def test_glued_heading_artifact_is_reported():
    result = parse("# 某条例\n\n第三十九条 依法处理。第六章附则第四十条本条例自2014年1月1日起施行。\n")
    assert result.status == "warning"
    assert any("glued" in m for m in result.messages)
    assert len(result.provisions) == 1


# ---------------------------------------------------------------------------- article-less files

AMENDMENT = """# 中华人民共和国刑法修正案（十一）

2020年12月26日 第十三届全国人民代表大会常务委员会第二十四次会议通过

<!-- INFO \u0045ND -->

一、将刑法第十七条修改为：“已满十六周岁的人犯罪，应当负刑事责任。

“（一）关闭、破坏直接关系生产安全的监控设备的；

“已满十四周岁不满十六周岁的人，应当负刑事责任。”

二、在刑法第一百三十三条之一后增加一条，作为第一百三十三条之二：“对行驶中的公共交通工具的驾驶人员使用暴力的，处一年以下有期徒刑。”

十一、本修正案自2021年3月1日起施行。
"""

CLAUSES = """# 人体损伤程度鉴定标准

<!-- INFO \u0045ND -->

## 范围

本标准规定了人体损伤程度鉴定的原则、方法、内容和等级划分。

## 程度分级

### 5.1\u3000颅脑、脊髓

#### 5.1.1 重伤一级

a)植物生存状态。

b)四肢瘫。

#### 5.1.2 重伤二级

a)头皮缺损面积累计75.0cm2以上。

## 附则

6.1 伤后因其他原因死亡的个体，其生前损伤程度依据本标准鉴定。

6.2 本标准中出现的数字均含本数
"""

CASE = """# 医疗美容机构虚假宣传和诊疗过错行为造成患者损害应予赔偿

消费者权益保护典型案例

2022-03-15

<!-- INFO \u0045ND -->

## 基本案情

邹某在医美机构进行了双侧下睑修复术，术后出现疤痕畸形。

## 典型意义

本案为典型的医疗美容侵权责任纠纷。
"""


def test_amendment_items_one_provision_per_item():
    result = parse(AMENDMENT)
    assert result.shape == "amendment_items"
    assert [p.article for p in result.provisions] == ["一", "二", "十一"]
    first = result.provisions[0]
    assert first.id == "中华人民共和国刑法修正案（十一）#一"
    assert first.text.startswith("将刑法第十七条修改为")
    assert first.text.count("\n") == 2
    assert result.status == "warning"
    assert any(m.startswith("article-less, parsed as amendment items") for m in result.messages)


def test_numbered_clauses_one_provision_per_clause_with_section_path():
    result = parse(CLAUSES)
    assert result.shape == "clauses"
    arts = by_article(result)
    assert list(arts) == ["范围", "5.1.1", "5.1.2", "6.1", "6.2"]
    assert arts["5.1.1"].path == ["程度分级", "5.1 颅脑、脊髓"]
    assert arts["5.1.1"].text == "重伤一级\na)植物生存状态。\nb)四肢瘫。"
    assert arts["6.2"].path == ["附则"]
    assert arts["6.2"].id == "人体损伤程度鉴定标准#6.2"
    assert any(m.startswith("article-less, parsed as numbered clauses") for m in result.messages)


def test_case_text_is_one_full_text_provision():
    result = parse(CASE)
    assert result.shape == "text"
    (provision,) = result.provisions
    assert provision.article == "全文"
    assert provision.id == "医疗美容机构虚假宣传和诊疗过错行为造成患者损害应予赔偿#全文"
    assert provision.text.splitlines() == [
        "基本案情",
        "邹某在医美机构进行了双侧下睑修复术，术后出现疤痕畸形。",
        "典型意义",
        "本案为典型的医疗美容侵权责任纠纷。",
    ]
    assert result.history == ["消费者权益保护典型案例", "2022-03-15"]
    assert result.messages == ["article-less, parsed as one 全文 provision"]


def test_long_article_less_text_is_chunked():
    paragraph = "这是一个很长的段落，用于测试分块。" * 40  # 680 chars
    result = parse("# 长文\n\n" + "\n\n".join([paragraph] * 10))
    assert result.shape == "text"
    assert len(result.provisions) > 1
    assert [p.article for p in result.provisions][:2] == ["片段1", "片段2"]
    assert "".join(p.text.replace("\n", "") for p in result.provisions) == paragraph * 10
    assert all(len(p.text) <= 1500 + 680 for p in result.provisions)


def test_plain_txt_title_from_first_line_and_plain_chapter_headings():
    text = "护士条例\n\n第一章 总则\n\n第一条 为了维护护士的合法权益，制定本条例。\n\n第二章 执业注册\n\n第七条 护士执业，应当注册。\n"
    result = parse(text, file="护士条例.txt")
    assert result.source.title == "护士条例"
    assert [(p.article, p.path) for p in result.provisions] == [
        ("第一条", ["第一章 总则"]),
        ("第七条", ["第二章 执业注册"]),
    ]


def test_title_falls_back_to_file_name_without_version_date():
    result = parse("第一条 为了规范管理，制定本办法。\n", file="某某管理办法(2020-01-02).txt")
    assert result.source.title == "某某管理办法"
    assert result.provisions[0].id == "某某管理办法#第一条"


def test_given_title_overrides_the_file():
    result = parse(CRIMINAL, title="刑法（官方标题）")
    assert result.provisions[0].id == "刑法（官方标题）#第一条"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty file"),
        ("\n\u200b\n  \n", "empty file"),
        ("# 某条例\n\n2020年1月1日 发布\n\n<!-- INFO \u0045ND -->\n\n", "no body text"),
    ],
)
def test_empty_bodies_are_skipped_with_a_reason(text, reason):
    result = parse(text)
    assert result.status == "skipped"
    assert result.provisions == []
    assert any(reason in m for m in result.messages)


# ---------------------------------------------------------------------------- reading files


def test_parse_file_reads_utf8_with_bom_and_takes_date_from_name(tmp_path):
    path = tmp_path / "医师法(2021-08-20).md"
    path.write_bytes("\ufeff# 中华人民共和国医师法\n\n第一条 为了保障医师合法权益，制定本法。\n".encode())
    result = parse_file(path, pack="dir:x")
    assert result.status == "ok"
    assert result.source.title == "中华人民共和国医师法"
    assert result.source.effective_date == "2021-08-20"
    assert result.source.file == "医师法(2021-08-20).md"
    assert result.provisions[0].id == "中华人民共和国医师法#第一条"


def test_parse_file_falls_back_to_gb18030_with_a_message(tmp_path):
    path = tmp_path / "gbk.txt"
    path.write_bytes("某条例\n\n第一条 为了规范管理，制定本条例。\n".encode("gb18030"))
    result = parse_file(path)
    assert result.status == "warning"
    assert "GB18030" in result.messages[0]
    assert result.provisions[0].text == "为了规范管理，制定本条例。"


def test_parse_file_decodes_utf16_with_bom(tmp_path):
    path = tmp_path / "utf16.txt"
    path.write_bytes("某条例\n\n第一条 为了规范管理，制定本条例。\n".encode("utf-16"))
    result = parse_file(path)
    assert result.status == "warning" and "UTF-16" in result.messages[0]
    assert result.provisions[0].id == "某条例#第一条"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xfd\xfc not text \x81", "undecodable"),
        ("第一条 文本".encode() + b"\x00\x01\x02", "binary"),
        (b"", "empty file"),
    ],
)
def test_parse_file_skips_bad_bytes_with_a_reason(tmp_path, payload, reason):
    path = tmp_path / "bad.md"
    path.write_bytes(payload)
    result = parse_file(path)
    assert result.status == "skipped"
    assert result.provisions == []
    assert any(reason in m for m in result.messages)


def test_parse_file_skips_files_over_the_size_cap(tmp_path):
    path = tmp_path / "big.md"
    path.write_text("# 大文件\n\n第一条 " + "文" * 2000 + "\n", encoding="utf-8")
    result = parse_file(path, max_bytes=1000)
    assert result.status == "skipped"
    assert "too large" in result.messages[0]
    assert parse_file(path, max_bytes=10_000).status == "ok"


def test_parse_file_missing_path_is_skipped_not_raised(tmp_path):
    result = parse_file(tmp_path / "nope.md")
    assert result.status == "skipped"
    assert "cannot read" in result.messages[0]
