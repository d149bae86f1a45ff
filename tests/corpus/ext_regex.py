"""regex: compile, findall and sub, 2,000 rounds."""
import regex

TEXT = "alice@example.com, bob@test.org; carol at nowhere, dave@mail.net"
pattern = regex.compile(r"(?P<user>\w+)@(?P<host>[\w.]+)")
total = 0
for i in range(2000):
    found = pattern.findall(TEXT)
    assert len(found) == 3
    masked = pattern.sub(lambda m: m.group("user")[0] + "***@" + m.group("host"), TEXT)
    words = regex.findall(r"\p{L}+", masked)
    total += len(masked) + len(words)
print("regex", total)
