"""The automatic recipe (auto.py) and the time budget (budget.py): rules, reasons, and what the user
sets winning."""

from __future__ import annotations

import math

import pytest

from lstmcast.auto import MEMBERS, Facts, choose
from lstmcast.budget import Budget, format_duration, parse_duration
from lstmcast.errors import LstmcastError

M3_MONTHLY = Facts("monthly", 12, 0, 1428, 48, 115, 144, True)
HOURLY = Facts("hourly", 24, 24, 4, 7000, 8000, 8760, False)
ONE_DAILY = Facts("daily", 7, 0, 1, 1096, 1096, 1096, True)


def as_dict(choices) -> dict:
    return {c.key: c.value for c in choices}


def test_monthly_recipe_has_a_value_and_a_reason_for_every_key():
    choices = choose(M3_MONTHLY, set())
    picked = as_dict(choices)
    assert picked["data.horizon"] == 18                    # M4 monthly
    assert picked["data.lookback"] == 36                   # 2 x horizon
    assert picked["data.scaling"] == "none" and picked["data.calendar"] == "none"
    assert picked["train.ensemble"] == MEMBERS == len(picked["train.members"])
    recipes = {(m["model.window_norm"], m["train.loss"]) for m in picked["train.members"]}
    assert recipes == {("mean", "smape"), ("standard", "mase")}   # positive data: both recipes
    assert {m["data.lookback"] for m in picked["train.members"]} == {36, 24}
    assert picked["train.batch_size"] == 256
    assert picked["train.windows_per_epoch"] == 300 * 256   # many windows: fixed-size epochs
    assert picked["train.refit_epochs"] == 1
    assert all(c.reason and c.line().startswith(f"{c.key} = ") for c in choices)
    assert len({c.key for c in choices}) == len(choices)   # each key once


def test_what_the_user_gave_is_never_chosen():
    given = {"data.horizon", "data.lookback", "train.loss", "model.window_norm", "train.ensemble",
             "train.batch_size"}
    picked = as_dict(choose(M3_MONTHLY, given, horizon=6))
    assert not given & set(picked)
    # Members then vary only in what the user left open (here: nothing but their seeds).
    assert all(m == {} for m in picked.get("train.members", [{}]))


def test_not_positive_data_trains_the_standard_recipe_only_and_subdaily_gets_calendar_and_skip():
    picked = as_dict(choose(HOURLY, set()))
    assert picked["data.horizon"] == 48
    assert {m["model.window_norm"] for m in picked["train.members"]} == {"standard"}
    assert {m["data.lookback"] for m in picked["train.members"]} == {168, 72}   # a week, three days
    assert picked["data.calendar"] == "auto" and picked["model.linear_skip"] is True
    assert picked["train.refit_epochs"] == 0   # the last horizon is a sliver of the history


def test_small_data_gets_small_batches_and_more_patience():
    picked = as_dict(choose(ONE_DAILY, set()))
    assert picked["data.horizon"] == 14 and picked["data.lookback"] == 56   # eight weeks
    assert picked["train.batch_size"] == 16
    assert "train.windows_per_epoch" not in picked      # an epoch is already small
    assert picked["train.patience"] >= 5


def test_patience_by_steps_an_epoch():
    """Epochs of 200+ steps (300 with windows sampled per epoch) wait 3 epochs and cut the rate after
    1; shorter ones, few series or many, wait 10 and cut the rate after 3 (measured under the
    time budget on four competition sets: never worse, M3 quarterly better)."""
    choices = {n: {c.key: c for c in choose(Facts("daily", 7, 0, n, 500, 600, 700, True), set())} for n in (4, 300)}
    few, many = choices[4], choices[300]
    assert 60 <= 4 * 600 // few["train.batch_size"].value < 200      # the middle band, few series
    assert (few["train.patience"].value, few["train.lr_patience"].value) == (10, 3)
    assert "steps an epoch" in few["train.patience"].reason
    assert (many["train.patience"].value, many["train.lr_patience"].value) == (3, 1)   # 300 full epochs
    facts = Facts("quarterly", 4, 0, 756, 16, 44, 144, True)
    quarterly = {c.key: c.value for c in choose(facts, set())}
    assert 60 <= facts.windows(quarterly["data.horizon"]) // quarterly["train.batch_size"] < 200   # the middle band
    assert (quarterly["train.patience"], quarterly["train.lr_patience"]) == (10, 3)      # many series alike


def test_short_series_shorten_the_horizon_and_lookback():
    short = Facts("monthly", 12, 0, 10, 20, 24, 30, True)
    picked = as_dict(choose(short, set()))
    assert picked["data.horizon"] == 14                   # (30 - 1) // 2: a validation part fits
    assert max(m["data.lookback"] for m in picked["train.members"]) <= 30 - 14
    # One series of 10 points among long ones: every series must train on horizon + 1 points.
    mixed = as_dict(choose(Facts("monthly", 12, 0, 10, 10, 100, 120, True), set()))
    assert mixed["data.horizon"] == 9


@pytest.mark.parametrize("text, seconds", [("10m", 600), ("90s", 90), ("1h30m", 5400), ("2h", 7200),
                                           (45, 45), ("12.5", 12.5), ("0.5m", 30)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["ten minutes", "10x", "-5", 0, True, "5m-"])
def test_bad_durations_name_the_key(text):
    with pytest.raises(LstmcastError, match="train.time_budget"):
        parse_duration(text)


def test_no_budget_and_formatting():
    assert parse_duration(None) is None and parse_duration("none") is None
    assert [format_duration(s) for s in (600, 5400, 7200, 42, None)] == ["10m", "90m", "2h", "42s", "none"]
    unlimited = Budget(None)
    assert unlimited.left() == math.inf and unlimited.member_deadline(3) == math.inf


def test_budget_shares_what_is_left_among_the_members_to_come():
    import time
    spent = Budget(100.0, started=time.perf_counter() - 200)   # started 200 s ago: nothing is left
    assert spent.left() < 0 and spent.member_deadline(2) <= time.perf_counter() + 1e-3
    fresh = Budget(100.0)
    left = fresh.left()
    assert 96 < left <= 97           # 3% kept for the run files
    now = time.perf_counter()
    assert fresh.member_deadline(4) - now == pytest.approx(left / 4, abs=0.5)


def test_selection_drops_a_member_that_drags_the_median_and_keeps_equals():
    import numpy as np

    from lstmcast.selection import choose_members
    rng = np.random.default_rng(0)
    actual = rng.normal(size=(200, 6))
    good = [actual + rng.normal(scale=0.3, size=actual.shape) for _ in range(3)]
    bad = actual + 2.0 + rng.normal(scale=0.3, size=actual.shape)
    scale = np.ones(200)
    chosen = choose_members(np.stack([good[0], bad, good[1], good[2]]), actual, scale)
    assert chosen.keep == (0, 2, 3)
    assert chosen.member_scores[1] > 2 * max(chosen.member_scores[k] for k in (0, 2, 3))
    report = chosen.report()
    assert report["kept"] == [1, 3, 4] and report["kept_mase"] < report["all_mase"]
    # Members about as good as each other: all kept (more members, less variance).
    assert choose_members(np.stack(good), actual, scale).keep == (0, 1, 2)
    # Greedy above MAX_EXHAUSTIVE members reaches the same kind of answer.
    many = np.stack([*good, *good, *good, bad, bad + 0.1, bad - 0.1])
    greedy = choose_members(many, actual, scale)
    assert len({9, 10, 11} & set(greedy.keep)) < 3
    assert greedy.scores[greedy.keep] < greedy.scores[tuple(range(12))]
