"""Plan a generation run: which (scene, seed norm, kind, mutation operators) each item gets.

Deterministic given (run id, seed, inputs), and stored whole in the run manifest, so a resumed run
works through exactly the same items. Scenes are filled by quota; within a scene the seed norms
rotate through the provisions the index finds relevant to that scene, least-used first. When the
store holds guardian judgments, scenes and norms where the guardian saw more failures get more
items: weight (failed+1)/(judged+2), the smoothed failure rate (unjudged = 0.5).

Once n exceeds a scene's candidate norms, several items share a (scene, seed norm) pair; with the
same retrieval they would get byte-identical draft prompts, and a deterministic model would draft
duplicates that dedup then discards. So each item also gets a speaker role and a setting: the k-th
item of a pair takes combination (offset + 7k) mod 36 of the 6 roles × 6 settings (7 is coprime to
36 and steps both role and setting), the offset hashed from (run id, seed, scene, norm). Up to 36
items of one pair thus draw distinct prompts, and the choice is reproducible.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Literal, Protocol

from pydantic import BaseModel

from medes.records import MUTATION_OPERATORS, Provision

# Retrieval queries for the 14 MedES scenes: the name alone retrieves poorly for some scenes.
SCENE_QUERIES: dict[str, str] = {
    "辅助生殖": "辅助生殖 人工授精 体外受精 胚胎 精子 卵子 代孕 性别鉴定",
    "医患关系": "医患关系 知情同意 告知 隐私 病历 收受财物 医疗纠纷",
    "动物实验": "实验动物 动物实验 善待 伦理审查 替代 减少 优化",
    "常规诊疗": "诊疗规范 合理检查 合理用药 处方 病历书写 过度医疗",
    "器官移植": "人体器官 捐献 移植 分配 买卖 死亡判定 书面同意",
    "急危重症处置": "急危重症 紧急救治 不得拒绝 抢救 近亲属 负责人批准",
    "基因/干细胞诊疗": "基因编辑 干细胞 人类遗传资源 胚胎 临床研究 审批",
    "数字医疗": "个人信息 敏感信息 数据 互联网诊疗 远程医疗 隐私 泄露",
    "安宁疗护": "临终 终末期 安宁疗护 缓解痛苦 尊严 患者意愿 放弃治疗",
    "公共卫生资源分配": "传染病 疫苗 公共卫生 资源分配 隔离 报告 公平",
    "人体试验": "临床试验 受试者 伦理委员会 书面知情同意 退出 风险",
    "常规护理": "护士 护理 执业 查对 医嘱 患者安全 隐私",
    "特殊疾病护理": "精神障碍 艾滋病 传染病患者 歧视 保密 约束 护理",
    "护患关系": "护士 尊重 关爱 患者 沟通 隐私 投诉",
}


SPEAKERS: tuple[str, ...] = ("医生", "护士", "研究人员", "患者", "患者家属", "医院管理人员")
"""Speaker roles (for objective items: the stem's main party), rotated per (scene, norm) pair."""
SETTINGS: tuple[str, ...] = ("门诊", "急诊", "ICU", "社区卫生服务中心", "科研项目", "互联网医院")
"""Settings the draft prompt places the item in, rotated with the speaker."""
_STEP = 7


class PlanItem(BaseModel):
    """One thread of a generation run."""

    index: int
    scene: str
    seed_norm: str
    """Provision id the draft is built around (retrieval is seeded with it)."""
    kind: Literal["subjective", "objective"] = "subjective"
    operators: list[str] = []
    """Mutation operators to apply to the draft (one `Send` branch each)."""
    speaker: str = ""
    """Speaker role the draft prompt asks for ("" in plans made before roles existed: any speaker)."""
    setting: str = ""
    """Where the item takes place ("" in older plans: unspecified)."""


class SearchIndex(Protocol):
    def search(self, query: str, k: int) -> list: ...


def scene_candidates(index: SearchIndex, scenes: Sequence[str], per_scene: int = 12) -> dict[str, list[str]]:
    """Provision ids relevant to each scene, best first."""
    out: dict[str, list[str]] = {}
    for scene in scenes:
        hits = index.search(SCENE_QUERIES.get(scene, scene), per_scene)
        out[scene] = [h.provision.id for h in hits]
    return out


def _weight(stats: dict[str, dict[str, int]], key: str) -> float:
    row = stats.get(key, {})
    return (row.get("failed", 0) + 1) / (row.get("judged", 0) + 2)


def _allocate(n: int, weights: dict[str, float], rng: random.Random) -> dict[str, int]:
    """Largest-remainder apportionment of n items by weight; ties broken by the seeded rng."""
    total = sum(weights.values())
    exact = {k: n * w / total for k, w in weights.items()}
    counts = {k: int(x) for k, x in exact.items()}
    order = sorted(weights, key=lambda k: (-(exact[k] - counts[k]), rng.random()))
    for k in order[: n - sum(counts.values())]:
        counts[k] += 1
    return counts


def plan(
    n: int,
    *,
    run_id: str,
    seed: int,
    candidates: dict[str, list[str]],
    failure_stats: dict[str, dict[str, dict[str, int]]] | None = None,
    mutations: int = 2,
    operators: Sequence[str] = MUTATION_OPERATORS,
    objective_share: float = 0.0,
) -> list[PlanItem]:
    """`n` items over the scenes in `candidates` (scenes without candidates are skipped)."""
    scenes = [s for s, ids in candidates.items() if ids]
    if not scenes:
        raise ValueError("no scene has any relevant provision in the index; nothing to plan")
    digest = hashlib.sha256(f"{run_id}\x1f{seed}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    stats = failure_stats or {"scene": {}, "norm": {}}
    counts = _allocate(n, {s: _weight(stats.get("scene", {}), s) for s in scenes}, rng)

    norm_stats = stats.get("norm", {})
    used: dict[str, int] = {}
    per_scene: dict[str, list[str]] = {}
    for scene in scenes:
        picks: list[str] = []
        for _ in range(counts[scene]):
            # least-used norm first (global quota), then most guardian failures, then retrieval rank
            ranked = sorted(
                enumerate(candidates[scene]),
                key=lambda r: (used.get(r[1], 0), -_weight(norm_stats, r[1]), r[0]),
            )
            norm = ranked[0][1]
            used[norm] = used.get(norm, 0) + 1
            picks.append(norm)
        per_scene[scene] = picks

    # interleave scenes so a partial (killed) run still covers many scenes
    order: list[tuple[str, str]] = []
    depth = max((len(p) for p in per_scene.values()), default=0)
    for level in range(depth):
        row = [(s, per_scene[s][level]) for s in scenes if level < len(per_scene[s])]
        order.extend(row)
    n_objective = round(n * objective_share)
    objective_slots = set(rng.sample(range(n), n_objective)) if n_objective else set()
    items = []
    occurrence: dict[tuple[str, str], int] = {}
    for i, (scene, norm) in enumerate(order):
        kind = "objective" if i in objective_slots else "subjective"
        ops = [] if kind == "objective" else rng.sample(list(operators), min(mutations, len(operators)))
        k = occurrence.get((scene, norm), 0)
        occurrence[(scene, norm)] = k + 1
        speaker, setting = _variant(run_id, seed, scene, norm, k)
        items.append(
            PlanItem(
                index=i,
                scene=scene,
                seed_norm=norm,
                kind=kind,
                operators=ops,
                speaker=speaker,
                setting=setting,
            )
        )
    return items


def _variant(run_id: str, seed: int, scene: str, norm: str, k: int) -> tuple[str, str]:
    """(speaker, setting) of the k-th item of a (scene, norm) pair; distinct for k < 36."""
    size = len(SPEAKERS) * len(SETTINGS)
    digest = hashlib.sha256(f"{run_id}\x1f{seed}\x1f{scene}\x1f{norm}".encode()).digest()
    combo = (int.from_bytes(digest[:8], "big") + _STEP * k) % size
    return SPEAKERS[combo % len(SPEAKERS)], SETTINGS[combo // len(SPEAKERS)]


def provision_brief(p: Provision, max_chars: int = 220) -> dict[str, str]:
    """What a prompt shows of a provision: id, citation and (trimmed) text."""
    text = p.text if len(p.text) <= max_chars else p.text[:max_chars] + "…"
    return {"id": p.id, "citation": p.citation(), "text": text}
