#!/usr/bin/env python3
"""Two-task toy mix for router training on a TinyStories model (issue 9, acceptance 5).

Both tasks share the same kind of story; only the instruction prefix (and the cue at the end)
tells them apart, which is what the Attention Router pools (SPEC §5: the first and last P tokens
of the prompt):
  qa       "Say the name of the girl." ... "The girl's name was" -> her name, met once early in
           the story (needs full attention: target 0.7)
  summary  "Say the name of the boy."  ... "The boy's name was"  -> his name, in the last
           sentence (a local window suffices: target 1.0)
Deterministic for a seed (Python's random.Random). Writes JSON lines {"prompt", "answer", "task"}.

usage: make_router_toy_data.py --n 400 --seed 1 --out train.jsonl
"""
import argparse
import json
import random

GIRLS = ["Lily", "Mia", "Anna", "Lucy", "Sue", "Amy", "Emma", "Sara", "Kate", "Jane"]
BOYS = ["Tom", "Ben", "Sam", "Max", "Tim", "Jack", "Bob", "Joe", "Dan", "Leo"]
OBJECTS = ["ball", "kite", "doll", "car", "boat", "book", "hat", "cake", "toy", "box"]
PLACES = ["park", "garden", "house", "forest", "school", "beach", "yard", "shop"]
FRIENDS = ["dog", "cat", "bird", "frog", "bunny", "bear", "duck", "fish"]

# Sentences without a name: the girl is "she" after her first mention, so recalling her name
# needs a key far behind the local window (past the sink block), which SSA heads do not see.
FILLER = [
    "The sun was warm and the sky was blue.",
    "She ran and jumped and laughed.",
    "She saw a big tree with red apples.",
    "A little {f} came to say hello.",
    "She felt happy and smiled.",
    "They played all day in the {p}.",
    "Mom called her for lunch.",
    "She shared the {o} with the {f}.",
    "The wind blew and the leaves fell down.",
    "She and the {f} became good friends.",
    "It started to rain, so they went inside.",
    "She said thank you and gave the {f} a hug.",
]


def story(rng, girl, boy):
    o, p, f = rng.choice(OBJECTS), rng.choice(PLACES), rng.choice(FRIENDS)
    lines = ["Once upon a time, in a small town, there was a big tree with green leaves.",
             f"There was a little girl named {girl}.",
             f"She loved to play with her {o} in the {p}."]
    for _ in range(rng.randint(8, 14)):
        lines.append(rng.choice(FILLER).format(o=o, p=p, f=f))
    lines.append(f"Then she met a boy named {boy}.")
    return " ".join(lines)


def sample(rng, task):
    girl, boy = rng.choice(GIRLS), rng.choice(BOYS)
    text = story(rng, girl, boy)
    if task == "qa":  # the girl's name: far back (retrieval; target 0.7)
        return {"prompt": f"Say the name of the girl.\n{text} The girl's name was",
                "answer": f" {girl}.", "task": "qa"}
    # the boy's name: in the last sentence (local; target 1.0)
    return {"prompt": f"Say the name of the boy.\n{text} The boy's name was",
            "answer": f" {boy}.", "task": "summary"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=400, help="samples (half per task)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    with open(a.out, "w") as f:
        for i in range(a.n):
            f.write(json.dumps(sample(rng, "qa" if i % 2 == 0 else "summary")) + "\n")


if __name__ == "__main__":
    main()
