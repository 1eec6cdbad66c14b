from __future__ import annotations

import pytest
from pydantic import ValidationError

from vidq.catalog import (
    DEFAULT_POOLS,
    MODELS,
    POOLS,
    Family,
    T2VInputs,
    Tier,
    frame_count,
    get_model,
)
from vidq.jobs import TRANSITIONS, WIRE_STATUS, JobState, WireStatus, queue_rank

SPEC_IDS = {
    "wan22-fast-t2v", "wan22-fast-t2v-pro", "wan22-fast-t2v-premium", "wan22-t2v-fp8",
    "wan22-fast-t2v-fp8", "wan22-fast-i2v", "wan22-fast-i2v-pro", "wan22-fast-i2v-premium",
    "wan22-i2v-fp8", "wan22-fast-i2v-fp8", "wan22-s2v-fast", "wan22-s2v-pro",
    "wan22-s2v-premium", "hunyuan-foley", "hunyuan-foley-pro", "hunyuan-foley-premium",
}  # fmt: skip


def test_every_spec_model_id_is_in_the_catalog() -> None:
    # the spec's 16, and LTX-2's two opt-in ids (issue 26)
    assert set(MODELS) == SPEC_IDS | {"ltx2-t2v", "ltx2-i2v"}
    assert {m.id for m in MODELS.values() if m.opt_in} == {"ltx2-t2v", "ltx2-i2v"}


def test_tiers_share_a_pool_and_variants_do_not() -> None:
    base, pro, premium = (get_model(f"wan22-fast-t2v{s}") for s in ("", "-pro", "-premium"))
    assert base and pro and premium
    assert base.pool == pro.pool == premium.pool
    assert (base.tier, pro.tier, premium.tier) == (Tier.BASE, Tier.PRO, Tier.PREMIUM)
    fp8 = get_model("wan22-t2v-fp8")
    assert fp8 and fp8.pool != base.pool
    assert get_model("wan22-fast-t2v-fp8").pool == fp8.pool  # type: ignore[union-attr]
    assert get_model("wan22-s2v-pro").family is Family.S2V  # type: ignore[union-attr]
    assert len(POOLS) == 8  # 6, and LTX-2's two
    assert len(DEFAULT_POOLS) == 6


def test_queue_rank_orders_tier_then_priority() -> None:
    ranks = [queue_rank(2, -1000), queue_rank(1, 1000), queue_rank(0, 1000), queue_rank(0, 0)]
    assert ranks == sorted(ranks)
    with pytest.raises(ValueError):
        queue_rank(0, 1001)


def test_state_machine_and_wire_mapping() -> None:
    assert WIRE_STATUS[JobState.PENDING] is WIRE_STATUS[JobState.RETRY] is WireStatus.IN_QUEUE
    assert WIRE_STATUS[JobState.RUNNING] is WireStatus.IN_PROGRESS
    for state in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED):
        assert state.terminal and not TRANSITIONS[state]
    assert JobState.CANCELLED in TRANSITIONS[JobState.RETRY]
    assert JobState.CANCELLED in TRANSITIONS[JobState.RUNNING]  # a cancel request
    assert JobState.PENDING not in TRANSITIONS[JobState.RUNNING]


def test_t2v_inputs_rules() -> None:
    ok = T2VInputs.model_validate({"prompt": "x", "extra_field": {"kept": True}})
    assert (ok.width, ok.height, ok.duration) == (1280, 720, 5)
    assert ok.model_dump()["extra_field"] == {"kept": True}  # forwarded, as the spec says
    assert frame_count(5) == 81
    for bad in (
        {"prompt": "x", "width": 1000},
        {"prompt": "x", "duration": 11},
        {"prompt": ""},
        {"prompt": "x", "height": float("nan")},
    ):
        with pytest.raises(ValidationError):
            T2VInputs.model_validate(bad)
