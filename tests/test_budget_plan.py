"""The time budget on a slow machine: the member that sizes the ensemble gets the epochs it
needs to measure one, and the ensemble is sized from them, instead of every member stopping
after one epoch (an equal share of the default ensemble size was its first deadline)."""

from __future__ import annotations

import importlib
import json
import time

import pytest
from conftest import SALES, cli

from lstmcast.budget import EPOCHS_PER_MEMBER

train_module = importlib.import_module("lstmcast.train")   # (lstmcast.train is also the function)

pytestmark = pytest.mark.usefixtures("one_thread")

EPOCH_SECONDS = 50.0   # each epoch "takes" this much longer: a machine 50x slower than this one


@pytest.fixture
def slow_epochs(monkeypatch):
    """time.perf_counter runs EPOCH_SECONDS ahead during every epoch's training steps."""
    real_clock, real_epoch = time.perf_counter, train_module.run_epoch
    ahead = [0.0]

    def epoch(*args, **kwargs):
        result = real_epoch(*args, **kwargs)
        ahead[0] += EPOCH_SECONDS
        return result

    monkeypatch.setattr(time, "perf_counter", lambda: real_clock() + ahead[0])
    monkeypatch.setattr(train_module, "run_epoch", epoch)
    return ahead


def train_members(run) -> list[int]:
    """Train the sample (auto recipe, 30 epochs unless early stopping, a 10-minute budget) into `run`;
    the member of each history.csv row."""
    result = cli("train", SALES, "--out", run, "--set", "model.hidden_size=8", "--set", "model.layers=1",
                 "--set", "train.epochs=30", "--set", "train.patience=30", "--set", "train.recipe=auto",
                 "--time-budget", "10m")
    assert result.exit_code == 0, result.stderr
    return [int(row.split(",")[0]) for row in (run / "history.csv").read_text().splitlines()[1:]]


def test_slow_epochs_train_fewer_members_for_longer(tmp_path, slow_epochs):
    run = tmp_path / "slow"
    members = train_members(run)
    # 600 s of budget, 50 s epochs, about EPOCHS_PER_MEMBER epochs a member: one member fits.
    assert 600 // (EPOCHS_PER_MEMBER * EPOCH_SECONDS) == 1
    assert set(members) == {1}
    assert 8 <= members.count(1) <= 12                         # the budget's epochs, not one
    metrics = json.loads((run / "metrics.json").read_text())
    assert any(cut.startswith("1 of 12 members planned") for cut in metrics["time_budget"]["cut"])
    assert metrics["time_budget"]["used"] <= 600


def test_the_wrap_up_is_kept_out_of_the_training_time():
    """Selection and validation forecast every member's windows after the last epoch: measured
    passes keep their time apart when it is more than the fixed reserve (3%, at least 1 s)."""
    from lstmcast.budget import Budget
    budget = Budget(100.0)
    assert budget.left() == pytest.approx(97.0, abs=0.1)              # the fixed reserve
    budget.finish_estimate(members=12, validation_seconds=0.5, save_seconds=0.25)
    assert budget.finish == pytest.approx(25 * 0.5 + 0.5)
    assert budget.left() == pytest.approx(100.0 - 13.0, abs=0.1)
    budget.finish_estimate(members=1, validation_seconds=0.1, save_seconds=0.1)
    assert budget.left() == pytest.approx(97.0, abs=0.1)              # below the fixed reserve: that one


def test_a_machine_that_slows_down_trains_fewer_members_instead_of_one_epoch_each(tmp_path, monkeypatch):
    # Members 1 and 2 train at 1 s an epoch, then another job starts: 40 s an epoch. Planned from the
    # latest member's epochs, the run stops starting members that could train only one epoch each
    # (from the average of all epochs, members 3-12 were each cut after one).
    real_clock, real_epoch, real_member = time.perf_counter, train_module.run_epoch, train_module._fit_member
    ahead, member = [0.0], [0]

    def fit_member(run, job, *args, **kwargs):
        member[0] = job.member
        return real_member(run, job, *args, **kwargs)

    def epoch(*args, **kwargs):
        result = real_epoch(*args, **kwargs)
        ahead[0] += 1.0 if member[0] <= 2 else 40.0
        return result

    monkeypatch.setattr(time, "perf_counter", lambda: real_clock() + ahead[0])
    monkeypatch.setattr(train_module, "run_epoch", epoch)
    monkeypatch.setattr(train_module, "_fit_member", fit_member)
    run = tmp_path / "slowing"
    members = train_members(run)
    assert members.count(1) >= 30 and members.count(2) >= 30     # before the slow-down (and a refit epoch)
    later = [m for m in set(members) if m > 2]
    one_epoch = [m for m in later if members.count(m) == 1]
    assert len(one_epoch) <= 1 and len(later) <= 3
    assert any(members.count(m) >= 5 for m in later)             # the time went to a member that could use it
    assert json.loads((run / "metrics.json").read_text())["time_budget"]["used"] <= 600
