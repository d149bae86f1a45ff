"""enum: Enum, IntEnum, Flag and StrEnum-like classes, lookups and iteration."""
import enum


class Color(enum.Enum):
    RED = 1
    GREEN = 2
    BLUE = 3


class Level(enum.IntEnum):
    LOW = 10
    HIGH = 20


class Perm(enum.Flag):
    R = enum.auto()
    W = enum.auto()
    X = enum.auto()


class Kind(str, enum.Enum):
    A = "a"
    B = "b"


total = 0
for i in range(2000):
    c = Color(i % 3 + 1)
    p = Perm.R | (Perm.W if i % 2 else Perm.X)
    total += c.value + Level.HIGH + (Perm.W in p) + len(Kind("a").value) + len(Color["RED"].name)
print("enum", total, [m.name for m in Color], Perm.R | Perm.W)
