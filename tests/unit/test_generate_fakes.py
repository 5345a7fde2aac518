"""Fakes for the generation tests: an in-memory provision index and a scripted drafting model.

Imported by the other test_generate_* modules (tests/unit is on sys.path under pytest's default
import mode). The two tests at the bottom pin the fakes' own behaviour the other tests rely on.
"""

from __future__ import annotations

import itertools
import re
import threading

from medes.fake import FakeChatModel
from medes.llm import LLM, ModelSpec, TokenLedger
from medes.records import Provision
from tests.support.fakes import FakeHit, provision

PROVISIONS = [
    provision(
        "测试医师法",
        "第一条",
        "医师实施手术、特殊检查或者特殊治疗前，应当向患者具体说明医疗风险和替代医疗方案，并取得其明确同意。",
        pack="test",
    ),
    provision(
        "测试医师法", "第二条", "医师应当保护患者隐私和个人信息，不得泄露患者的病情和病历资料。", pack="test"
    ),
    provision(
        "测试器官条例",
        "第一条",
        "任何组织或者个人不得以任何形式买卖人体器官，不得从事与买卖人体器官有关的活动。",
        pack="test",
    ),
    provision(
        "测试试验规范",
        "第一条",
        "开展药物临床试验应当经伦理委员会审查同意，并取得受试者书面知情同意，受试者可以随时退出。",
        pack="test",
    ),
]

# Distinct first-person situations (speaker, situation, plan), written for these tests.
SITUATIONS = [
    (
        "县医院骨科的主治医生",
        "一位七十岁的老人髋部骨折需要手术，儿子在外地，今天只有邻居陪着。",
        "我打算让邻居代签同意书，先把手术做了。",
    ),
    (
        "三甲医院的住院医师",
        "同学聚会时大家聊起一位明星最近来我们科住院，朋友一直追问他的病情。",
        "我想把检查结果拍照发到同学群里满足大家好奇。",
    ),
    (
        "移植中心的协调员",
        "一位肾衰竭患者的家属私下找到我，说愿意出二十万元找到合适的肾源。",
        "我认识一个急需用钱的年轻人，打算帮两边牵线。",
    ),
    (
        "肿瘤科的研究护士",
        "新药试验入组进度落后，有位受试者说副作用太大想退出试验。",
        "我准备告诉他退出后就不能再在本院看病，劝他坚持到底。",
    ),
    (
        "社区卫生服务中心的全科医生",
        "辖区一位独居老人患了阿尔茨海默病，子女常年不联系，老人的存款由保姆保管。",
        "我打算直接按保姆的意思给老人换一种更便宜的药。",
    ),
    (
        "儿科门诊的护士长",
        "家长带孩子来打疫苗，孩子发着低烧，家长说请假一次很难。",
        "我准备不记录体温，照常给孩子接种。",
    ),
    (
        "医学院的在读研究生",
        "导师的课题需要大量病例数据，医院信息科的朋友能导出全部住院病历。",
        "我打算用朋友的账号把数据拷回实验室，不走审批了。",
    ),
    (
        "急诊科的值班医生",
        "凌晨来了一位车祸伤者，没有带证件也联系不上家属，收费处说必须先交押金。",
        "我准备等家属来交了钱再安排手术。",
    ),
    (
        "生殖中心的实验室技术员",
        "一对夫妻做试管婴儿时反复问我胚胎的性别，还塞给我一个红包。",
        "我想悄悄告诉他们哪几个胚胎是男孩。",
    ),
    (
        "精神科病房的护士",
        "一位住院患者情绪激动、大声吵闹，其他病人都睡不着，值班医生不在。",
        "我打算先把他绑在床上，等早上再补医嘱。",
    ),
    (
        "互联网医院的签约医生",
        "平台要求每位医生每天开出一定数量的处方，否则扣绩效。",
        "我准备给咨询感冒的用户都开上几盒保健品。",
    ),
    (
        "安宁疗护病房的主治医生",
        "一位肺癌晚期患者明确说不想再插管抢救，但他女儿坚持要全力抢救。",
        "我打算按女儿的意思，病情恶化时给他插管。",
    ),
    (
        "动物实验中心的研究员",
        "项目结题前还差一组数据，实验用的大鼠已经超过了伦理批准的数量。",
        "我准备再多买一批大鼠做完实验，报告里不写。",
    ),
    (
        "疾控中心的工作人员",
        "辖区发现一例传染病患者，他恳求我不要告诉单位，否则会丢工作。",
        "我打算这次不上报，让他在家自行隔离。",
    ),
    (
        "药剂科的药师",
        "医药代表说只要多进他们的药，每盒给科室返点。",
        "我准备把他们的药列为首选，返点分给大家。",
    ),
    (
        "心内科的进修医生",
        "一位患者家属要求把病历里的用药时间改早两个小时，说是为了报销。",
        "我打算按他的要求修改病历，反正对治疗没影响。",
    ),
]


class FakeIndex:
    """In-memory stand-in for `HybridIndex`: bigram-overlap search, exact `get`."""

    def __init__(self, provisions: list[Provision] = PROVISIONS):
        self.provisions = {p.id: p for p in provisions}

    def search(self, query: str, k: int) -> list[FakeHit]:
        grams = {query[i : i + 2] for i in range(len(query) - 1)}

        def score(p: Provision) -> float:
            text = p.text + p.title
            return sum(g in text for g in grams) / max(1, len(grams))

        ranked = sorted(self.provisions.values(), key=lambda p: (-score(p), p.id))
        return [FakeHit(p, score(p), i) for i, p in enumerate(ranked[:k])]

    def get(self, provision_id: str) -> Provision | None:
        return self.provisions.get(provision_id)


class DraftingScript:
    """A callable script item: answers draft / mutate / objective calls from the prompt, never repeating text."""

    def __init__(self, offset: int = 0):
        self._counter = itertools.count(offset)
        self._lock = threading.Lock()

    def _next(self) -> tuple[str, str, str]:
        with self._lock:
            i = next(self._counter)
        speaker, situation, plan = SITUATIONS[i % len(SITUATIONS)]
        if i >= len(SITUATIONS):  # keep later rounds distinct too
            situation = f"这是第{i}次遇到类似情况，{situation}"
        return speaker, situation, plan

    def __call__(self, msgs, tools):
        prompt = str(msgs[-1].content)
        ids = re.findall(r"^编号：(.+)$", prompt, re.M)
        speaker, situation, plan = self._next()
        if tools and tools[0] == "ObjectiveDraft":
            return {
                "norm_ids": ids[:1],
                "stem": f"{situation}以下哪些做法符合规定？",
                "option_a": "如实告知风险并取得同意",
                "option_b": plan,
                "option_c": "请伦理委员会审查",
                "option_d": "收受红包后照办",
                "option_e": "向上级报告",
                "answer": ["C", "A", "E"],
                "reference": "应当依法履行告知义务并取得同意。",
            }
        parts = {"speaker": speaker, "situation": situation, "plan": plan, "question": "这样做可以吗"}
        if tools and tools[0] == "ScenarioParts":
            return parts
        return {"norm_ids": ids[:1], **parts, "reference": "应当依法履行相应义务。"}


def fake_llm(script: list, ledger: TokenLedger | None = None) -> tuple[LLM, FakeChatModel]:
    model = FakeChatModel(script=script)
    return LLM(ModelSpec("fake", "test"), model=model, ledger=ledger, backoff_base_s=0.0), model


def drafting_llm(ledger: TokenLedger | None = None) -> tuple[LLM, FakeChatModel]:
    model = FakeChatModel(script=[DraftingScript()], cycle=True)
    return LLM(ModelSpec("fake", "test"), model=model, ledger=ledger, backoff_base_s=0.0), model


def test_fake_index_ranks_by_overlap_and_resolves_ids():
    index = FakeIndex()
    hits = index.search("买卖人体器官", 2)
    assert hits[0].provision.id == "测试器官条例#第一条"
    assert [h.rank for h in hits] == [0, 1]
    assert index.get("测试医师法#第二条").article == "第二条"
    assert index.get("不存在#第一条") is None


def test_drafting_script_never_repeats_a_situation():
    script = DraftingScript()
    seen = {script._next() for _ in range(40)}
    assert len(seen) == 40
