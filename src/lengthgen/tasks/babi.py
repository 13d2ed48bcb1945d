"""Offline bAbI-style tasks qa1-qa5 (Weston et al. 2015) and a rule-based solver.

The generator simulates a small world (people walking between rooms, picking up, dropping and
handing over objects; rooms placed on a compass) and tells it as a list of fact sentences, then
asks one question whose answer it reads off its own simulation:

* qa1 single supporting fact: ``Where is Mary?``
* qa2 two supporting facts: ``Where is the apple?`` (the apple is where its holder is)
* qa3 three supporting facts: ``Where was the apple before the kitchen?``
* qa4 two-argument relations: ``What is north of the kitchen?`` / ``What is the kitchen north of?``
* qa5 three-argument relations: ``Who gave the milk to Bill?``, ``What did Fred give to Bill?``...

The solver is independent of the generator: it parses the fact sentences out of any text (facts
may be hidden among unrelated sentences, as in BABILong) and replays them to answer, so tests can
check every generated answer against it.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

PEOPLE = ("Mary", "John", "Daniel", "Sandra")
GIVERS = ("Bill", "Fred", "Jeff", "Mary")
ROOMS = ("bathroom", "bedroom", "garden", "hallway", "kitchen", "office")
OBJECTS = ("apple", "football", "milk")
MOVE = ("went to", "journeyed to", "travelled to", "moved to", "went back to")
GET = ("got", "grabbed", "picked up", "took")
DROP = ("dropped", "discarded", "put down", "left")
GIVE = ("gave", "handed", "passed")
OPPOSITE = {"north": "south", "south": "north", "east": "west", "west": "east"}
TASKS = ("qa1", "qa2", "qa3", "qa4", "qa5")
ANSWER_LABELS = {"qa1": set(ROOMS), "qa2": set(ROOMS), "qa3": set(ROOMS), "qa4": set(ROOMS),
                 "qa5": set(GIVERS) | set(OBJECTS)}


@dataclass(frozen=True)
class BabiSample:
    task: str
    facts: tuple[str, ...]
    question: str
    answer: str


# ------------------------------------------------------------------------------ generator
class _World:
    def __init__(self, rng: random.Random, people: tuple[str, ...]):
        self.rng, self.people = rng, people
        self.where: dict[str, str] = {}
        self.holder: dict[str, str | None] = {o: None for o in OBJECTS}
        self.spot: dict[str, str | None] = {o: None for o in OBJECTS}     # where a dropped object lies
        self.trail: dict[str, list[str]] = {o: [] for o in OBJECTS}      # rooms an object has been in
        self.facts: list[str] = []

    def obj_room(self, o: str) -> str | None:
        return self.where.get(self.holder[o]) if self.holder[o] else self.spot[o]

    def _note(self, o: str) -> None:
        room = self.obj_room(o)
        if room is not None and (not self.trail[o] or self.trail[o][-1] != room):
            self.trail[o].append(room)

    def move(self, p: str, there: bool = False) -> None:
        room = self.rng.choice([r for r in ROOMS if r != self.where.get(p)])
        self.where[p] = room
        self.facts.append(f"{p} {self.rng.choice(MOVE)} the {room}.")
        for o in OBJECTS:
            if self.holder[o] == p:
                self._note(o)

    def get(self, p: str, o: str, there: bool = False) -> None:
        self.holder[o], self.spot[o] = p, None
        self.facts.append(f"{p} {self.rng.choice(GET)} the {o}{' there' if there else ''}.")
        self._note(o)

    def drop(self, p: str, o: str, there: bool = False) -> None:
        self.holder[o], self.spot[o] = None, self.where[p]
        self.facts.append(f"{p} {self.rng.choice(DROP)} the {o}{' there' if there else ''}.")

    def give(self, p: str, o: str, q: str) -> None:
        self.holder[o] = q
        self.facts.append(f"{p} {self.rng.choice(GIVE)} the {o} to {q}.")
        self._note(o)


def _walks(world: _World, steps: int, carry: bool, there: bool = False) -> None:
    rng = world.rng
    for p in world.people:
        world.move(p)
    for _ in range(steps):
        p = rng.choice(world.people)
        mine = [o for o in OBJECTS if world.holder[o] == p]
        here = [o for o in OBJECTS if world.holder[o] is None and world.spot[o] in (None, world.where[p])]
        r = rng.random()
        if carry and r < 0.25 and here:
            world.get(p, rng.choice(here), there)
        elif carry and r < 0.35 and mine:
            world.drop(p, rng.choice(mine), there)
        else:
            world.move(p)


def generate(task: str, rng: random.Random, num_facts: int = 8) -> BabiSample:
    """One sample of ``task`` with about ``num_facts`` facts (a pure function of the rng)."""
    if task not in TASKS:
        raise ValueError(f"unknown bAbI task {task!r}; choose one of {TASKS}")
    if task == "qa4":
        return _qa4(rng)
    if task == "qa5":
        return _qa5(rng, num_facts)
    for _ in range(1000):
        world = _World(rng, PEOPLE)
        _walks(world, max(1, num_facts - len(PEOPLE)), carry=task != "qa1")
        if task == "qa1":
            p = rng.choice(PEOPLE)
            return BabiSample(task, tuple(world.facts), f"Where is {p}?", world.where[p])
        if task == "qa2":
            known = [o for o in OBJECTS if world.obj_room(o) is not None]
            if known:
                o = rng.choice(known)
                return BabiSample(task, tuple(world.facts), f"Where is the {o}?", world.obj_room(o))
        if task == "qa3":
            moved = [o for o in OBJECTS if len(world.trail[o]) >= 2]
            if moved:
                o = rng.choice(moved)
                last, before = world.trail[o][-1], world.trail[o][-2]
                if world.trail[o].count(last) == 1:          # "before the kitchen" must be unambiguous
                    return BabiSample(task, tuple(world.facts), f"Where was the {o} before the {last}?", before)
        num_facts += 1
    raise RuntimeError(f"could not generate a {task} sample")  # pragma: no cover


def _qa4(rng: random.Random) -> BabiSample:
    a, b, c = rng.sample(ROOMS, 3)
    d1 = rng.choice(sorted(OPPOSITE))
    d2 = rng.choice([d for d in sorted(OPPOSITE) if d not in (d1, OPPOSITE[d1])])   # no second answer
    facts = (f"The {a} is {d1} of the {b}.", f"The {c} is {d2} of the {b}.")
    if rng.random() < 0.5:
        return BabiSample("qa4", facts, f"What is {d1} of the {b}?", a)
    return BabiSample("qa4", facts, f"What is the {b} {OPPOSITE[d1]} of?", a)


def _qa5(rng: random.Random, num_facts: int) -> BabiSample:
    world = _World(rng, GIVERS)
    gifts: list[tuple[str, str, str]] = []
    for p in GIVERS:
        world.move(p)
    while len(world.facts) < num_facts or not gifts:
        p = rng.choice(GIVERS)
        mine = [o for o in OBJECTS if world.holder[o] == p]
        free = [o for o in OBJECTS if world.holder[o] is None]
        r = rng.random()
        if mine and r < 0.5:
            o, q = rng.choice(mine), rng.choice([g for g in GIVERS if g != p])
            world.give(p, o, q)
            gifts.append((p, o, q))
        elif free and r < 0.8:
            world.get(p, rng.choice(free), there=True)
        else:
            world.move(p)
    p, o, q = gifts[-1]
    kind = rng.randrange(5)
    if kind == 0:
        return BabiSample("qa5", tuple(world.facts), f"Who gave the {o} to {q}?", p)
    if kind == 1:
        return BabiSample("qa5", tuple(world.facts), f"Who did {p} give the {o} to?", q)
    if kind == 2:
        return BabiSample("qa5", tuple(world.facts), f"What did {p} give to {q}?", o)
    if kind == 3:
        return BabiSample("qa5", tuple(world.facts), f"Who received the {o}?", q)
    return BabiSample("qa5", tuple(world.facts), f"Who gave the {o}?", p)


# ------------------------------------------------------------------------------ solver
_NAME = "|".join(sorted(set(PEOPLE) | set(GIVERS)))
_ROOM = "|".join(ROOMS)
_OBJ = "|".join(OBJECTS)
_FACTS = [
    ("move", re.compile(rf"\b({_NAME}) (?:{'|'.join(MOVE)}) the ({_ROOM})\.")),
    ("get", re.compile(rf"\b({_NAME}) (?:{'|'.join(GET)}) the ({_OBJ})(?: there)?\.")),
    ("drop", re.compile(rf"\b({_NAME}) (?:{'|'.join(DROP)}) the ({_OBJ})(?: there)?\.")),
    ("give", re.compile(rf"\b({_NAME}) (?:{'|'.join(GIVE)}) the ({_OBJ}) to ({_NAME})\.")),
    ("rel", re.compile(rf"\bThe ({_ROOM}) is (north|south|east|west) of the ({_ROOM})\.")),
]


def parse_facts(text: str) -> list[tuple]:
    """Every fact sentence in ``text``, in order, as (kind, *arguments)."""
    found = []
    for kind, pattern in _FACTS:
        found += [(m.start(), (kind, *m.groups())) for m in pattern.finditer(text)]
    return [fact for _, fact in sorted(found)]


def solve(text: str, question: str) -> str:
    """Answer a qa1-qa5 question from the facts in ``text``."""
    where: dict[str, str] = {}
    holder: dict[str, str] = {}
    spot: dict[str, str] = {}
    trail: dict[str, list[str]] = {}
    rel: dict[tuple[str, str], str] = {}          # (direction, of room) -> room
    gifts: list[tuple[str, str, str]] = []

    def note(o: str) -> None:
        room = where.get(holder[o]) if o in holder else spot.get(o)
        if room and (not trail.get(o) or trail[o][-1] != room):
            trail.setdefault(o, []).append(room)

    for kind, *args in parse_facts(text):
        if kind == "move":
            where[args[0]] = args[1]
            for o, h in holder.items():
                if h == args[0]:
                    note(o)
        elif kind == "get":
            holder[args[1]] = args[0]
            spot.pop(args[1], None)
            note(args[1])
        elif kind == "drop":
            holder.pop(args[1], None)
            spot[args[1]] = where.get(args[0])
        elif kind == "give":
            holder[args[1]] = args[2]
            gifts.append((args[0], args[1], args[2]))
            note(args[1])
        elif kind == "rel":
            a, d, b = args
            rel[(d, b)] = a
            rel[(OPPOSITE[d], a)] = b

    rules = [
        (rf"Where is ({_NAME})\?", lambda p: where[p]),
        (rf"Where is the ({_OBJ})\?", lambda o: where[holder[o]] if o in holder else spot[o]),
        (rf"Where was the ({_OBJ}) before the ({_ROOM})\?", lambda o, r: trail[o][trail[o].index(r) - 1]),
        (r"What is (north|south|east|west) of the (\w+)\?", lambda d, b: rel[(d, b)]),
        (r"What is the (\w+) (north|south|east|west) of\?", lambda a, d: rel[(OPPOSITE[d], a)]),
        (rf"Who gave the ({_OBJ}) to ({_NAME})\?", lambda o, q: [g for g in gifts if g[1:] == (o, q)][-1][0]),
        (rf"Who did ({_NAME}) give the ({_OBJ}) to\?", lambda p, o: [g for g in gifts if g[:2] == (p, o)][-1][2]),
        (rf"What did ({_NAME}) give to ({_NAME})\?", lambda p, q: [g for g in gifts if (g[0], g[2]) == (p, q)][-1][1]),
        (rf"Who received the ({_OBJ})\?", lambda o: [g for g in gifts if g[1] == o][-1][2]),
        (rf"Who gave the ({_OBJ})\?", lambda o: [g for g in gifts if g[1] == o][-1][0]),
    ]
    for pattern, answer in rules:
        m = re.fullmatch(pattern, question.strip())
        if m:
            try:
                return answer(*m.groups())
            except (KeyError, IndexError, ValueError):
                raise ValueError(f"the facts do not answer {question!r}") from None
    raise ValueError(f"not a qa1-qa5 question: {question!r}")
