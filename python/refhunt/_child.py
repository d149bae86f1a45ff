"""Imported at the startup of a Python whose environment names REFHUNT_CHILDREN, by the
`refhunt_children.pth` file installed beside the package: a child of a program that `refhunt
run` tracks (a subprocess, or a `multiprocessing` worker that `spawn` or `forkserver`
started). The child is tracked in turn; a failure leaves it untracked and says nothing
(refhunt names the child without a report)."""
try:
    from refhunt import _run

    _run.start_child()
except Exception:
    pass
