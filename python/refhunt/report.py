"""The report object that `refhunt.check()` and `refhunt.track()` return."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence


@dataclass(frozen=True)
class NativeFrame:
    """One native frame: function, file:line when DWARF has them, and where the name came
    from (`dwarf`, `symtab` or `offset`)."""
    function: Optional[str]
    file: Optional[str]
    line: Optional[int]
    module: str
    source: str
    inlined: bool


@dataclass(frozen=True)
class PythonFrame:
    file: str
    line: int
    function: str


@dataclass(frozen=True)
class Holder:
    """The C function that took a reference and never released it, named from the refcount
    writes of watched objects (hardware breakpoints)."""
    function: str
    site: str
    """The file:line of the increment it never gave back."""
    kept: float
    """References it kept per watched object."""
    objects: int
    watched: int
    """Watched objects it kept references in, of those watched."""
    whole: bool
    """Every watched object was watched from its creation (or the holder run's start)."""
    per_call: Optional[float]
    """In a holder run: references kept per call."""
    native: List[NativeFrame]
    python: List[PythonFrame]

    def describe(self) -> str:
        if self.per_call is not None:
            amount = "+%s per call" % _number(self.per_call)
        else:
            amount = "+%s per object (%d of %d watched)" % (_number(self.kept), self.objects,
                                                             self.watched)
        return "reference taken at %s in %s and never released: %s" % (self.site, self.function,
                                                                        amount)


@dataclass(frozen=True)
class Group:
    """Surviving objects of one type, made at one place."""
    class_: str
    """`leaked`, `indirect`, `once`, `held_outside`, `reachable`, `garbage` or
    `interpreter` (see docs/classes.md)."""
    type_name: str
    count: int
    bytes: int
    site: Optional[str]
    """The C file:line that created them, or the innermost Python frame."""
    per_call: Optional[float]
    """Under repetition: objects per call."""
    runs: List[int]
    """Under repetition: objects left by each measured run."""
    path: Optional[str]
    """For reachable objects: a path from a module, e.g. `module m . cache [list] -> int`."""
    native: List[NativeFrame]
    python: List[PythonFrame]
    evidence: Optional[str] = None
    """What the class rests on, e.g. `1,000 from one C line, referenced by nothing`."""
    holder: Optional[Holder] = None
    """Who took the reference that keeps them, when a watched object says."""
    held_by: Optional[str] = None
    """Lost native blocks that point to them, e.g. `1 malloc block allocated at foo.c:88
    (possibly lost)`."""

    @property
    def is_leak(self) -> bool:
        return self.class_ in ("leaked", "indirect")

    def matches(self, pattern: str) -> bool:
        """Whether `pattern` (a shell-style wildcard) matches the type name or the site."""
        return fnmatch.fnmatch(self.type_name, pattern) or fnmatch.fnmatch(self.site or "", pattern)

    def describe(self) -> str:
        rate = ""
        if self.per_call is not None:
            per_call = int(self.per_call) if self.per_call == int(self.per_call) else self.per_call
            rate = ", %s %s per call" % (format(per_call, ","), self.type_name)
        text = "%s %s (%s%s) created at %s" % (format(self.count, ","), self.type_name,
                                                self.class_.replace("_", " "), rate, self.site)
        return text + ("; " + self.holder.describe() if self.holder else "")


@dataclass(frozen=True)
class Unexplained:
    """An object whose refcount grew beyond the references found to it, whoever made it:
    a singleton handed out with one reference too many leaves no new object."""
    type_name: str
    repr: str
    """Its type and size, or the value of a str, an int or a tuple of them, truncated."""
    unexplained: int
    gained: int
    """References nothing accounts for at the end, and how many it gained in the window."""
    per_call: Optional[float]
    grew: Optional[int]
    """Under repetition: references gained per call, and the runs its refcount grew in."""
    site: Optional[str]
    """Where it was made, if in the window."""
    evidence: str
    holder: Optional[Holder] = None

    def matches(self, pattern: str) -> bool:
        return fnmatch.fnmatch(self.type_name, pattern) or fnmatch.fnmatch(self.repr, pattern)

    def describe(self) -> str:
        if self.per_call is not None:
            amount = "+%s references per call" % _number(self.per_call)
        else:
            amount = "+%s references" % format(self.gained, ",")
        text = "%s %s: %s nothing accounts for" % (self.type_name, self.repr, amount)
        return text + ("; " + self.holder.describe() if self.holder else "")


@dataclass(frozen=True)
class NativeLeak:
    """Native memory that C code allocated and lost (not a Python object), from one site:
    blocks of `malloc`, `calloc`, `PyMem_Malloc`, `PyObject_Malloc`, C++'s `new` (through
    malloc) or Rust's global allocator."""
    allocator: str
    """`malloc`, `calloc`, `realloc`, `PyMem_Malloc`, `PyObject_Malloc`, ..."""
    count: int
    bytes: int
    """Blocks counted as leaked and their bytes: the lost ones in a plain run, every block of
    the site under repetition."""
    definite: int
    indirect: int
    possible: int
    reachable: int
    """Blocks with no pointer to them anywhere, pointed to only by lost blocks, reached only
    from a stale stack slot or through their middle, and still pointed to."""
    site: Optional[str]
    """The C file:line that allocated them."""
    per_call: Optional[float]
    runs: List[int]
    evidence: str
    native: List[NativeFrame]
    python: List[PythonFrame]
    holds: List[Dict[str, Any]] = field(default_factory=list)
    """Leaked objects the lost blocks point to: `type_name`, `count`, `site`."""

    def matches(self, pattern: str) -> bool:
        """Whether `pattern` (a shell-style wildcard) matches the allocator or the site."""
        return fnmatch.fnmatch(self.allocator, pattern) or fnmatch.fnmatch(self.site or "", pattern)

    def describe(self) -> str:
        rate = ""
        if self.per_call is not None:
            rate = ", %s blocks per call" % _number(self.per_call)
        return "%s native blocks (%s bytes) from %s%s allocated at %s: %s" % (
            format(self.count, ","), format(self.bytes, ","), self.allocator, rate, self.site,
            self.evidence)


def _native_leak(data: Dict[str, Any]) -> NativeLeak:
    native, python = _frames(data)
    return NativeLeak(allocator=data["allocator"], count=data["count"], bytes=data["bytes"],
                      definite=data["definite"]["count"], indirect=data["indirect"]["count"],
                      possible=data["possible"]["count"], reachable=data["reachable"]["count"],
                      site=data.get("site"), per_call=data.get("per_call"),
                      runs=list(data.get("runs", [])), evidence=data["evidence"],
                      native=native, python=python, holds=list(data.get("holds", [])))


def _number(n: float) -> str:
    return format(int(n) if n == int(n) else round(n, 2), ",")


def _frames(data: Dict[str, Any]):
    native = [NativeFrame(f.get("function"), f.get("file"), f.get("line"), f["module"],
                          f["source"], f["inlined"]) for f in data.get("native", [])]
    python = [PythonFrame(f["file"], f["line"], f["function"]) for f in data.get("python", [])]
    return native, python


def _holder(data: Optional[Dict[str, Any]]) -> Optional[Holder]:
    if not data:
        return None
    native, python = _frames(data)
    return Holder(function=data["function"], site=data["site"], kept=data["kept"],
                  objects=data["objects"], watched=data["watched"], whole=data["whole"],
                  per_call=data.get("per_call"), native=native, python=python)


def _unexplained(data: Dict[str, Any]) -> Unexplained:
    return Unexplained(type_name=data["type_name"], repr=data["repr"],
                       unexplained=data["unexplained"], gained=data["gained"],
                       per_call=data.get("per_call"), grew=data.get("grew"),
                       site=data.get("site"), evidence=data["evidence"],
                       holder=_holder(data.get("holder")))


def _group(data: Dict[str, Any]) -> Group:
    native, python = _frames(data)
    return Group(
        class_=data["class"],
        type_name=data["type_name"],
        count=data["count"],
        bytes=data["bytes"],
        site=data.get("site"),
        per_call=data.get("per_call"),
        runs=list(data.get("runs", [])),
        path=data.get("path"),
        native=native,
        python=python,
        evidence=data.get("evidence"),
        holder=_holder(data.get("holder")),
        held_by=data.get("held_by"),
    )


@dataclass
class Report:
    """What survived a window: leak groups, other listed groups, counters and the text."""
    leaks: List[Group]
    held: List[Group]
    counters: Dict[str, Any]
    notes: List[str]
    text: str = field(repr=False)
    unexplained: List[Unexplained] = field(default_factory=list)
    """Objects whose references grew beyond those found (see `Unexplained`)."""
    native: List[NativeLeak] = field(default_factory=list)
    """Native memory that C code lost, by allocation site (see `NativeLeak`)."""

    @classmethod
    def from_json(cls, data: Dict[str, Any], text: str) -> "Report":
        return cls(leaks=[_group(g) for g in data["leaks"]],
                   held=[_group(g) for g in data.get("held", [])],
                   counters=data["counters"], notes=list(data["notes"]), text=text,
                   unexplained=[_unexplained(u) for u in data.get("unexplained", [])],
                   native=[_native_leak(n) for n in data.get("native_leaks", [])])

    def leaks_beyond(self, max_objects: float = 0, ignore: Sequence[str] = ()) -> List[Group]:
        """Leak groups left after the allowances: groups matching an `ignore` pattern are
        dropped, and so are the rest when they leak `max_objects` or fewer objects per call
        in all (or in all, without repetition)."""
        kept = [g for g in self.leaks if not any(g.matches(p) for p in ignore)]
        total = sum(g.per_call if g.per_call is not None else g.count for g in kept)
        return kept if total > max_objects else []

    def assert_no_leaks(self, max_objects: float = 0, ignore: Sequence[str] = ()) -> None:
        """Raises AssertionError, with the text report as its message, if anything leaked
        beyond the allowances (see `leaks_beyond`), or if an object not matched by `ignore`
        gained unexplained references, or native memory not matched by `ignore` leaked."""
        if (self.leaks_beyond(max_objects, ignore) or self.unexplained_beyond(ignore)
                or self.native_beyond(ignore)):
            raise AssertionError(self.text)

    def native_beyond(self, ignore: Sequence[str] = ()) -> List[NativeLeak]:
        """Native leaks that no `ignore` pattern matches (by allocator or site)."""
        return [n for n in self.native if not any(n.matches(p) for p in ignore)]

    def unexplained_beyond(self, ignore: Sequence[str] = ()) -> List[Unexplained]:
        """Objects with unexplained references that no `ignore` pattern matches."""
        return [u for u in self.unexplained if not any(u.matches(p) for p in ignore)]

    def __str__(self) -> str:
        return self.text
