"""dataclasses: frozen and ordered dataclasses, asdict, replace and sorting."""
import dataclasses
from typing import List


@dataclasses.dataclass(frozen=True, order=True)
class Point:
    x: int
    y: int = 0


@dataclasses.dataclass
class Path:
    name: str
    points: List[Point] = dataclasses.field(default_factory=list)

    def length(self):
        return len(self.points)


path = Path("p")
for i in range(2000):
    path.points.append(Point(i % 37, i))
moved = [dataclasses.replace(p, y=p.y + 1) for p in path.points[:100]]
as_dict = dataclasses.asdict(Path("q", moved[:3]))
print("dataclasses", path.length(), min(path.points), as_dict["points"][0], len(set(moved)))
