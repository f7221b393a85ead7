"""Helpers the training tests share."""


def run_killed_at_step(monkeypatch, step: int, run) -> None:
    """Call `run()` (a Trainer run of the train backend) with a callback that raises at the end of
    optimizer step `step`, as a crash would: the checkpoints saved before it stay."""
    import pytest
    from transformers import TrainerCallback

    import hfpipe.train.trainer as train_module

    class Killed(Exception):
        pass

    class KillAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise Killed

    real = train_module.checkpoint_callbacks
    monkeypatch.setattr(train_module, "checkpoint_callbacks", lambda *a: [*real(*a), KillAt()])
    try:
        with pytest.raises(Killed):
            run()
    finally:
        monkeypatch.setattr(train_module, "checkpoint_callbacks", real)
