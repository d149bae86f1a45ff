"""Imported at the startup of a Python whose environment names REFHUNT_CHILDREN, by the
`refhunt_children.pth` file installed beside the package: a child of a program that `refhunt
run` tracks (a subprocess, or a `multiprocessing` worker that `spawn` or `forkserver`
started). The child is tracked in turn; a subinterpreter of a tracked process is not a child.
It must not fail for refhunt: an error once its status is written is named in refhunt's
report; one before (refhunt cannot be imported) leaves the child untracked and unnamed."""
try:
    from refhunt import _subinterpreter

    if not _subinterpreter.running_in_one():
        from refhunt import _run

        _run.start_child()
except Exception:
    pass
