"""refhunt run's scratch directory, where the bootstrap and the capture are written: private
to the user, under a name nobody can plant a symlink at beforehand, and removed at the end."""
import os
import re
import stat

SHOW_SCRATCH = """\
import os, stat, sys
scratch = os.path.dirname(os.path.dirname(sys.modules["sitecustomize"].__file__))
st = os.lstat(scratch)
print(scratch, oct(st.st_mode & 0o777), stat.S_ISDIR(st.st_mode))
"""


def test_scratch_is_private_unguessable_and_removed(env, tmp_path):
    tmpdir = tmp_path / "shared-tmp"
    tmpdir.mkdir()
    # What an attacker could plant for a name made from the PID alone.
    target = tmp_path / "victim.txt"
    target.write_text("untouched\n")
    for pid in range(os.getpid(), os.getpid() + 200):
        (tmpdir / ("refhunt-%d" % pid)).symlink_to(target)
    r = env.run("python", env.script("scratch.py", SHOW_SCRATCH), env={"TMPDIR": str(tmpdir)})
    assert r.rc == 0, r.stderr
    scratch, mode, is_dir = r.stdout.split()
    assert re.fullmatch(r"refhunt-\d+-[0-9a-f]{16}", os.path.basename(scratch)), scratch
    assert os.path.dirname(scratch) == str(tmpdir)
    assert (mode, is_dir) == ("0o700", "True")
    assert not os.path.exists(scratch), "the scratch directory outlived the run"
    assert target.read_text() == "untouched\n"
    assert not any(stat.S_ISDIR(os.lstat(p).st_mode) for p in tmpdir.iterdir())
