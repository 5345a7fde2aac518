"""Plausible first-person clinical text for the simulator's answers to scenario-shaped schemas.

Why: random fragments in every string field fail medes' generation gates (a sentence repeated, the
query restating its own 考点), so against the simulator most generation threads ended after one call
and a throughput reading of `medes generate` measured mostly rejections. When a schema asks for the
parts of a MedES item — `speaker`, `situation`, `plan`, `question`, `reference`, `stem` — the
simulator composes them here from pools of ordinary sentences (written for this module, not taken
from any corpus or benchmark), so drafts pass the gates at a realistic rate.

Everything is generic: the field names are the only signal, nothing is read from the prompt (so no
provision text can be copied), and the text is a deterministic function of the `random.Random` the
simulator seeds per request fingerprint. Sentences within one answer come from different pools and
carry random numbers, so an answer never repeats a sentence and two requests rarely compose the
same text (dedup sees distinct scenarios).
"""

from __future__ import annotations

import random
from collections.abc import Callable

_SPEAKERS = (
    "县医院普外科的主治医生",
    "三甲医院心内科的住院医师",
    "社区卫生服务中心的全科医生",
    "儿科病房的护士长",
    "肿瘤科的主任医师",
    "急诊科的值班医生",
    "妇产科的助产士",
    "医学院附属医院的临床研究协调员",
    "一家民营口腔诊所的医生",
    "精神科的主治医师",
    "药剂科的临床药师",
    "乡镇卫生院的院长",
    "重症监护室的护士",
    "一项新药临床试验的主要研究者",
    "医院伦理委员会的秘书",
    "体检中心的医生",
    "一位住院老人的女儿",
    "一名糖尿病患者的丈夫",
    "刚确诊肺癌的患者",
    "医院信息科的工程师",
    "康复科的治疗师",
    "眼科的副主任医师",
    "麻醉科的住院医师",
    "血液透析中心的护士",
    "一名孕妇的婆婆",
    "医药代表出身的科室秘书",
    "骨科的进修医生",
    "互联网医院的签约医生",
    "医院医务处的工作人员",
    "疾控中心的流调人员",
)
_PATIENTS = (
    "科里收治了一位{a}岁的男性患者，入院诊断是急性阑尾炎",
    "我负责的一位{a}岁女患者刚做完乳腺肿块穿刺，病理提示恶性",
    "上周门诊来了一个{a}岁的孩子，反复发热已经{d}天",
    "病房里有位{a}岁的老人脑梗后意识不清，家属意见不一致",
    "我们中心正在招募{n}名高血压患者参加一项药物试验",
    "一位{a}岁的孕妇孕{w}周，产检发现胎儿心脏异常",
    "有位{a}岁的患者肝硬化晚期，已经住院{d}天",
    "一名{a}岁的大学生因抑郁发作来就诊，说最近有轻生的念头",
    "急诊送来一位车祸伤员，失血较多，身边没有家属",
    "我父亲今年{a}岁，确诊胃癌中期，医生建议尽快手术",
    "科室里一位{a}岁的患者长期透析，最近经济上很困难",
    "我们医院去年做了{n}例同类手术，今年要接受上级检查",
    "一位{a}岁的外籍患者不太会说中文，需要签署麻醉同意书",
    "有个{a}岁的患者术后出现了切口感染，住院时间延长了{d}天",
    "我丈夫今年{a}岁，患糖尿病多年，最近视力下降得很厉害",
    "门诊有位{a}岁的女士要求做一项她在网上看到的检查",
    "一位{a}岁的艾滋病感染者来做阑尾手术，他不想让单位知道",
    "我们课题组收集了{n}份患者的血液样本，准备做基因检测",
    "一名{a}岁的初中生在家长陪同下来咨询近视手术",
    "病区一位{a}岁的晚期患者一直在问自己还能活多久",
)
_FACTS = (
    "手术风险评估下来并发症的可能性大约是百分之{p}",
    "目前床位非常紧张，还有{n}个患者在走廊加床等待",
    "家属在外地打工，最快要{d}天后才能赶回来",
    "这种进口药一个疗程要花{m}万元，医保不能报销",
    "患者本人反复说不想知道太多病情细节",
    "同一病区另有一位患者也急需这台呼吸机",
    "药厂的代表最近经常来科室，还说会给每个处方返点",
    "检查结果已经出来{d}天了，但还没有人跟患者解释",
    "科室这个月的收入指标还差{m}万元没有完成",
    "患者的单位领导打电话来问他的详细诊断",
    "有一位记者想来病房拍摄这个罕见病例",
    "上级医师出差了，今晚只有我一个人值班",
    "患者之前签过的同意书只写了检查，没有写治疗方案",
    "研究方案里的随访时间比原计划多了{d}个月",
    "患者的母亲要求我们无论如何不要告诉他实情",
    "病历里有一处用药剂量当时记录错了",
    "这位患者还没满十八周岁，父母离异后跟着奶奶生活",
    "医院刚刚上线了一个需要上传病历的人工智能系统",
    "我的一位亲戚也在等同一个手术名额",
    "患者已经欠费{m}千元，财务科催着处理",
)
_PLANS = (
    "我打算先让护工代为签字，等家属回来再补手续",
    "我准备不告诉患者真实的诊断，只说是良性的炎症",
    "我想把这些样本顺便用于另一项没有报伦理审查的研究",
    "我考虑把病历里那处错误直接改掉，不做任何标注",
    "我打算优先安排给愿意自费使用进口药的患者",
    "我准备把患者的检查结果发到同学群里讨论一下",
    "我想让年轻医生在没有上级指导的情况下先独立主刀",
    "我打算多开几项检查，把科室的指标补上",
    "我准备接受药厂的邀请去外地参加一次全程报销的会议",
    "我想直接停掉他的治疗，把床位让给别的患者",
    "我打算在知情同意书里把风险写得轻一些，免得患者害怕",
    "我想先给患者用上试验药物，同意书以后再补签",
    "我准备按照家属的意思放弃抢救，不再征求患者本人的意见",
    "我打算把患者的联系方式提供给一家保险公司",
    "我想在门诊直接给这个孩子开成人剂量的处方",
    "我准备答应记者的请求，让他进病房拍患者的正脸",
    "我打算让熟悉的患者插队，先做这个检查",
    "我想把这次不良事件当作普通并发症处理，不上报",
    "我准备把研究中途退出的受试者数据继续用在分析里",
    "我打算告诉单位领导他的诊断，方便单位安排工作",
)
_QUESTIONS = (
    "这样安排可以吗？",
    "我这样做有没有问题？",
    "这种做法合适吗？",
    "我应该怎么处理才稳妥？",
    "这样做会不会违反规定？",
    "您觉得这样处理妥当吗？",
    "这样做在伦理上站得住吗？",
    "我是不是可以这么办？",
    "这种情况下我该怎么做？",
    "如果这样做，需要注意什么？",
    "这样算不算侵犯了患者的权利？",
    "请问这样的安排合理吗？",
)
_REFERENCES = (
    "实施手术前应当向患者说明医疗风险并取得其明确同意，不能由无关人员代签",
    "医务人员应当如实告知病情，并根据患者意愿采取恰当的告知方式",
    "开展涉及人的生物医学研究须经伦理审查，并取得受试者的知情同意",
    "病历资料不得涂改、伪造或销毁，更正时应当保留原记录并注明",
    "医疗资源分配应当遵循公平原则，不得以支付能力作为唯一依据",
    "医务人员对患者的隐私和个人信息负有保密义务，未经同意不得披露",
    "医师不得利用职务之便收受药品企业给予的财物或回扣",
    "医疗机构发生医疗安全不良事件时应当按规定及时报告",
    "对未成年人实施诊疗应当取得其监护人的同意并兼顾本人意愿",
    "检查和治疗应当因病施治，不得实施过度或不必要的医疗服务",
    "临床试验受试者有权在任何阶段无条件退出，其退出后的数据使用须经同意",
    "紧急抢救无法取得本人或近亲属意见时，应经医疗机构负责人批准后实施",
)
_STEM_ENDS = (
    "以下哪些做法符合我国相关规定？",
    "下列处理方式中正确的是哪些？",
    "以下说法中哪些是恰当的？",
)


def _fill(template: str, rng: random.Random) -> str:
    """Numbers make sentences of one template differ between answers (and keep dedup honest)."""
    return template.format(
        a=rng.randint(6, 88),
        d=rng.randint(2, 20),
        n=rng.randint(12, 300),
        w=rng.randint(12, 36),
        p=rng.randint(3, 40),
        m=rng.randint(2, 30),
    )


def _within(parts: list[str], max_len: int | None) -> str:
    """Join whole sentences while they fit `max_len` (at least the first, cut if it alone is too long)."""
    out = parts[0] if max_len is None else parts[0][:max_len]
    for part in parts[1:]:
        if max_len is not None and len(out) + len(part) > max_len:
            break
        out += part
    return out


def speaker(rng: random.Random, max_len: int | None) -> str:
    return _within([rng.choice(_SPEAKERS)], max_len)


def situation(rng: random.Random, max_len: int | None) -> str:
    facts = rng.sample(_FACTS, 2)
    return _within(
        [_fill(rng.choice(_PATIENTS), rng) + "。", *(_fill(f, rng) + "。" for f in facts)], max_len
    )


def plan(rng: random.Random, max_len: int | None) -> str:
    return _within([_fill(rng.choice(_PLANS), rng) + "。"], max_len)


def question(rng: random.Random, max_len: int | None) -> str:
    return _within([rng.choice(_QUESTIONS)], max_len)


def reference(rng: random.Random, max_len: int | None) -> str:
    return _within([rng.choice(_REFERENCES) + "。"], max_len)


def stem(rng: random.Random, max_len: int | None) -> str:
    return _within(
        [
            _fill(rng.choice(_PATIENTS), rng) + "，" + _fill(rng.choice(_FACTS), rng) + "。",
            rng.choice(_STEM_ENDS),
        ],
        max_len,
    )


FIELDS: dict[str, Callable[[random.Random, int | None], str]] = {
    "speaker": speaker,
    "situation": situation,
    "plan": plan,
    "question": question,
    "reference": reference,
    "stem": stem,
}
"""Property name → text composer; other string fields keep schemagen's generic Chinese text."""
