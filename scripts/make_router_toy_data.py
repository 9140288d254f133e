#!/usr/bin/env python3
"""Two-task toy mix for router training on a TinyStories model (issue 9, acceptance 5).

Both tasks share the same kind of story; only the instruction prefix (and the question at the
end) tells them apart, which is what the Attention Router pools (SPEC §5: the first and last P
tokens of the prompt):
  qa       "Read the story and answer the question." ... "Question: ...? Answer:"   (target 0.7)
  summary  "Write a one-line summary of the story."  ... "Summary:"                  (target 1.0)
Deterministic for a seed (Python's random.Random). Writes JSON lines {"prompt", "answer", "task"}.

usage: make_router_toy_data.py --n 400 --seed 1 --out train.jsonl
"""
import argparse
import json
import random

NAMES = ["Lily", "Tom", "Ben", "Mia", "Sam", "Anna", "Max", "Lucy", "Tim", "Sue", "Jack", "Amy"]
OBJECTS = ["ball", "kite", "doll", "car", "boat", "book", "hat", "cake", "toy", "box"]
PLACES = ["park", "garden", "house", "forest", "school", "beach", "yard", "shop"]
FRIENDS = ["dog", "cat", "bird", "frog", "bunny", "bear", "duck", "fish"]
FEELINGS = ["happy", "sad", "scared", "excited", "angry", "tired", "proud", "shy"]

FILLER = [
    "The sun was warm and the sky was blue.",
    "{n} ran and jumped and laughed.",
    "{n} saw a big tree with red apples.",
    "A little {f} came to say hello.",
    "{n} felt {e} and smiled.",
    "They played all day until it was time to go home.",
    "Mom called {n} for lunch.",
    "{n} shared the {o} with the {f}.",
    "The wind blew and the leaves fell down.",
    "{n} and the {f} became good friends.",
    "It started to rain, so they went inside.",
    "{n} said thank you and gave the {f} a hug.",
]


def story(rng):
    n, o, p, f, e = (rng.choice(NAMES), rng.choice(OBJECTS), rng.choice(PLACES),
                     rng.choice(FRIENDS), rng.choice(FEELINGS))
    lines = [f"Once upon a time, there was a child named {n}.",
             f"{n} loved to play with a {o} in the {p}."]
    for _ in range(rng.randint(6, 14)):
        lines.append(rng.choice(FILLER).format(n=n, o=o, f=f, e=e))
    lines.append("The end.")
    return " ".join(lines), n, o, p


def sample(rng, task):
    text, n, o, p = story(rng)
    if task == "qa":
        return {"prompt": f"Read the story and answer the question.\n{text}\n"
                          f"Question: What did {n} love to play with? Answer:",
                "answer": f" a {o}.", "task": "qa"}
    return {"prompt": f"Write a one-line summary of the story.\n{text}\nSummary:",
            "answer": f" {n} played in the {p}.", "task": "summary"}


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
