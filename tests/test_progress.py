"""Progress lines of long server phases: at most one per interval, and one at the end."""

import common.progress as progress


class Recorded(progress.LogProgress):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lines = []

    def emit(self, line):
        self.lines.append(line)


def test_logs_every_interval_and_at_the_end(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    p = Recorded("gan prior", 100, "step", every=10.0)
    for _ in range(100):  # one step per second
        clock[0] += 1.0
        p.tick()
    assert len(p.lines) == 10  # at 10, 20, ..., 90 s, then the end at 100 s
    assert p.lines[0].startswith("gan prior: 10/100 (10%) [00:10<01:30")
    assert p.lines[-1].startswith("gan prior: 100/100 (100%)")
    p.tick()  # past the total: no second end line
    assert len(p.lines) == 10
