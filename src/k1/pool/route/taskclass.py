"""Task classes: what a prompt asks (arithmetic, code, facts, prose), read from the prompt itself.

The pool keys trust by (member, task class): a member earns trust for arithmetic separately from code.
The classifier is (complement) naive Bayes over character 1–4-grams of the lower-cased prompt with every
digit mapped to "0" (so "What is 7 + 5?" and "What is 31 - 9?" read alike); it needs no model, trains in
milliseconds, and learns more classes from any labelled prompts (`fit`). The built-in training prompts
below and the held-out prompts in `HELD_OUT` are disjoint phrasings; `held_out_accuracy()` measures it.

It also learns from the pool's experiences (`learned_examples`): the calibration set's prompts (always), and
prompts whose class a trusted caller stated — the caller's class (`task_class=`, `metadata.task_class` on the
server), a class given with feedback. An untrusted tenant's labels are kept with its experiences but never
learned from: one client cannot retrain the classifier for everyone. The classifier is refit from the built-in prompts plus the newest of those
(`[pool] task_class_examples`, default 2,000; 0: built-in only) when the pool opens, after `k1 pool calibrate`
and after DREAM (`Router.refit_task_classes`). The classifier's own guesses are never learned from.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter, defaultdict

TASK_CLASSES = ("arithmetic", "code", "facts", "prose")

_OPS = {"+": ("plus", "added to"), "-": ("minus", "take away"), "*": ("times", "multiplied by")}
_FACT_TEMPLATES = ["What is the capital of {}?", "Who wrote {}?", "Which country is {} in?", "What is {} made of?",
                   "When did {} happen?", "Who was {}?", "What language is spoken in {}?", "What is {} known for?",
                   "Name the largest city in {}.", "What does {} mean?", "How tall is {}?", "Where is {}?"]
_FACT_SUBJECTS = ["France", "Japan", "Peru", "Hamlet", "the Eiffel Tower", "glass", "the moon landing", "Mozart",
                  "Brazil", "Mount Everest", "a photon", "Canada", "the Nile", "Marie Curie", "Kenya", "bread"]
_CODE_TEMPLATES = ["Write a Python function `{f}(x)` that {d}. Reply with only the code.",
                   "Write a function {f} that {d}.", "Implement `{f}` in Python: it {d}.",
                   "def {f}(x):\n    \"\"\"{d}\"\"\"\n", "Fix this Python code: def {f}(x) return x", "Write code that {d}."]
_CODE_DESCS = ["returns x plus 3", "reverses a string", "sorts a list of numbers", "counts the vowels in s",
               "returns True if n is prime", "reads a file and prints its lines", "returns the maximum of xs",
               "merges two dictionaries", "parses a date string", "returns the first n elements of xs"]
_CODE_NAMES = ["add_three", "reverse", "sort_numbers", "count_vowels", "is_prime", "print_lines", "maximum",
               "merge", "parse_date", "first_n"]
_PROSE = ["The old house at the end of the lane had been empty for years, and the children", "Once upon a time, in a",
          "She opened the letter slowly and read the first line twice before she", "It was a bright cold day in April,",
          "The rain had not stopped for three days. In the village, the farmers", "He walked into the room and",
          "Continue the story: the dragon looked down at the knight and", "Write a short poem about the sea.",
          "In the morning the market was already busy with traders who", "Tell me a story about a lost dog.",
          "The committee met on Tuesday to discuss the plans for the new", "Describe a sunset over the mountains.",
          "My grandmother used to say that the river", "Write a paragraph about autumn leaves.",
          "The train pulled out of the station and", "Dear diary, today I finally decided to"]


def normalize(text: str) -> str:
    return re.sub(r"\d", "0", " ".join(text.lower().split()))


def features(text: str) -> Counter:
    t = f" {normalize(text)} "
    return Counter(t[i:i + n] for n in (1, 2, 3, 4) for i in range(len(t) - n + 1))


def training_prompts(seed: int = 0) -> list[tuple[str, str]]:
    """(prompt, class) pairs the built-in classifier learns from (fixed; disjoint from `HELD_OUT`)."""
    rng = random.Random(seed)
    out = []
    for _ in range(40):
        a, b, op = rng.randint(0, 99), rng.randint(0, 99), rng.choice("+-*")
        out.append((rng.choice([f"What is {a} {op} {b}?", f"Calculate {a} {op} {b}.", f"{a} {op} {b} =",
                                f"What is {a} {_OPS[op][0]} {b}?", f"How much is {a} {_OPS[op][1]} {b}?",
                                f"Compute {a}{op}{b}", f"Solve: {a} {op} {b}"]), "arithmetic"))
    for f, d in zip(_CODE_NAMES, _CODE_DESCS):
        for t in rng.sample(_CODE_TEMPLATES, 3):
            out.append((t.format(f=f, d=d), "code"))
    for s in _FACT_SUBJECTS:
        for t in rng.sample(_FACT_TEMPLATES, 2):
            out.append((t.format(s), "facts"))
    out += [(p, "prose") for p in _PROSE]
    return out


# Held-out prompts: other phrasings, numbers, functions, subjects and texts than the training prompts.
HELD_OUT: list[tuple[str, str]] = [
    ("What is 7 + 5?", "arithmetic"), ("What is 48 - 13?", "arithmetic"), ("Calculate 9 * 8.", "arithmetic"),
    ("How much is 120 plus 35?", "arithmetic"), ("What is 3 times 4?", "arithmetic"), ("14 + 27 =", "arithmetic"),
    ("Add 15 and 6.", "arithmetic"), ("What is 100 divided by 4?", "arithmetic"),
    ("Write a Python function `square(x)` that returns x squared. Reply with only the code.", "code"),
    ("Write a function that checks whether a word is a palindrome.", "code"),
    ("Implement binary search in Python.", "code"), ("def fib(n):\n", "code"),
    ("Write a Python function `times_7(x)` that returns x multiplied by 7.", "code"),
    ("Write code that prints the numbers from 1 to 10.", "code"),
    ("What is the capital of Italy?", "facts"), ("Who painted the Mona Lisa?", "facts"),
    ("Which planet is the largest in the solar system?", "facts"), ("What is the capital of Australia?", "facts"),
    ("Who discovered penicillin?", "facts"), ("What language is spoken in Mexico?", "facts"),
    ("Where is the Taj Mahal?", "facts"), ("Who was Napoleon?", "facts"),
    ("The ship sailed into the harbour just as the sun", "prose"), ("Once, long ago, a fox and a crow", "prose"),
    ("Write a short story about a robot who learns to paint.", "prose"),
    ("The wind howled through the empty streets of the town, and", "prose"),
    ("Describe a walk through a forest in winter.", "prose"), ("The door creaked open and", "prose"),
    ("Write a poem about the night sky.", "prose"), ("After the party, everyone went home except", "prose"),
]


# Held-out prompts for learning from experiences (fixed before it was measured): `HELD_OUT` plus a class the
# built-in classifier does not know, `copy` (the routing bench's "Repeat this word exactly: w" tasks), in the
# bench's phrasing with other words and in other phrasings.
HELD_OUT_COPY: list[tuple[str, str]] = [
    ("Repeat this word exactly: zebra", "copy"), ("Repeat this word exactly: lantern", "copy"),
    ("Repeat this word exactly: marble", "copy"), ("Repeat this word exactly: saddle", "copy"),
    ("Repeat the word 'cactus' exactly.", "copy"), ("Say this word back to me: meadow", "copy"),
    ("Copy this word exactly: harbor", "copy"), ("Repeat after me: thunder", "copy"),
]

# A second fixed set, written after the first measurement of learning from experiences (see docs/pool.md) and
# before the complement form was measured on it: other phrasings again, five classes.
HELD_OUT_2: list[tuple[str, str]] = [
    ("What's 56 + 17?", "arithmetic"), ("Please compute 8 * 12.", "arithmetic"), ("Subtract 9 from 40.", "arithmetic"),
    ("What do you get if you add 23 and 19?", "arithmetic"), ("Work out 7 x 6.", "arithmetic"),
    ("Write a Python function that returns the sum of a list.", "code"),
    ("Can you write a JavaScript function to reverse an array?", "code"),
    ("Create a Python class for a bank account with deposit and withdraw methods.", "code"),
    ("Write a function `is_even(n)` in Python.", "code"), ("How do I read a CSV file in Python?", "code"),
    ("What is the capital of Norway?", "facts"), ("Who invented the telephone?", "facts"),
    ("How many continents are there?", "facts"), ("What is the tallest mountain in Africa?", "facts"),
    ("Who wrote Pride and Prejudice?", "facts"),
    ("The lighthouse keeper climbed the stairs one last time and", "prose"),
    ("Write a short story about a girl who finds a key.", "prose"),
    ("Snow fell softly on the quiet village while", "prose"), ("Write a poem about the ocean at dawn.", "prose"),
    ("It was the best of times, it was the", "prose"),
    ("Repeat this word exactly: pebble", "copy"), ("Repeat this word exactly: falcon", "copy"),
    ("Please repeat the word 'orchid' back to me.", "copy"), ("Copy this word: lemon", "copy"),
]


class TaskClassifier:
    """Naive Bayes over character n-grams; `classify(prompt)` → a task class.

    `form="complement"` (the default) is complement naive Bayes (Rennie et al., 2003): a class's score is how
    unlike the *other* classes' n-grams the prompt is. Measured: learning from the routing bench's templated
    experiences, the multinomial form's code class was swamped by one template (held-out code prompts in
    other phrasings went to prose); the complement form kept them (docs/pool.md). `form="multinomial"` is
    the plain form, with class priors."""

    def __init__(self, examples: list[tuple[str, str]] | None = None, alpha: float = 0.1,
                 form: str = "complement"):
        if form not in ("complement", "multinomial"):
            raise ValueError(f"form {form!r}: complement or multinomial")
        self.alpha, self.form = alpha, form
        self.counts: dict[str, Counter] = defaultdict(Counter)
        self.docs: Counter = Counter()
        self.fit(training_prompts() if examples is None else examples)

    def fit(self, examples: list[tuple[str, str]]) -> "TaskClassifier":
        """Add labelled prompts (more examples or new classes)."""
        for text, cls in examples:
            self.counts[cls].update(features(text))
            self.docs[cls] += 1
        self._totals = {c: sum(v.values()) for c, v in self.counts.items()}
        self._all = sum(self.counts.values(), Counter())
        self._vocab = len(self._all) or 1
        return self

    @property
    def classes(self) -> list[str]:
        return sorted(self.counts)

    def scores(self, prompt: str) -> dict[str, float]:
        """Per class, higher is likelier: the log posterior up to a constant (multinomial), or minus the log
        likelihood under the other classes' n-grams (complement)."""
        f = features(prompt)
        n = sum(self.docs.values())
        total = sum(self._totals.values())
        out = {}
        for c, cnt in self.counts.items():
            if self.form == "complement":
                denom = math.log(total - self._totals[c] + self.alpha * self._vocab)
                out[c] = -sum(k * (math.log(self._all.get(g, 0) - cnt.get(g, 0) + self.alpha) - denom)
                              for g, k in f.items())
            else:
                denom = math.log(self._totals[c] + self.alpha * self._vocab)
                out[c] = math.log(self.docs[c] / n) + sum(k * (math.log(cnt.get(g, 0) + self.alpha) - denom)
                                                          for g, k in f.items())
        return out

    def classify(self, prompt: str) -> str:
        if not self.counts:
            raise ValueError("the task classifier has no training prompts")
        s = self.scores(prompt)
        return max(s, key=s.get)

    def accuracy(self, examples: list[tuple[str, str]]) -> float:
        return sum(self.classify(p) == c for p, c in examples) / len(examples) if examples else float("nan")


def held_out_accuracy(clf: TaskClassifier | None = None, examples: list[tuple[str, str]] | None = None) -> dict:
    """The classifier's accuracy on `examples` (default `HELD_OUT`), overall and per class."""
    clf = clf or TaskClassifier()
    examples = HELD_OUT if examples is None else examples
    per = {c: clf.accuracy([x for x in examples if x[1] == c]) for c in dict.fromkeys(c for _, c in examples)}
    wrong = [{"prompt": p, "class": c, "got": clf.classify(p)} for p, c in examples if clf.classify(p) != c]
    return {"accuracy": clf.accuracy(examples), "n": len(examples), "per_class": per, "wrong": wrong}


def question(text: str) -> str:
    """What a prompt asks: the last user message of a 'role: content' prompt (`prompt_text`), else the text."""
    if text.endswith("\nassistant:"):
        body = text[: -len("\nassistant:")]
        users = [m.start() for m in re.finditer(r"(?m)^user: ", body)]
        if users:
            return body[users[-1] + len("user: "):]
    return text


def learned_examples(store, cap: int = 2000) -> list[tuple[str, str]]:
    """(prompt, class) pairs the pool has a stated class for: the calibration prompts (always: they are
    reserved, no number of newer labels pushes them out), then the newest `cap` experiences whose class a
    trusted caller stated or gave with feedback (an untrusted tenant's labels are never learned from)."""
    if cap <= 0:
        return []
    cal = [(question(p), c) for p, c in store.calibration_prompts()]
    return cal + [(question(p), c) for p, c in store.labelled_prompts(cap)]


def learned_classifier(store, cap: int = 2000) -> TaskClassifier:
    """The built-in prompts plus what the pool has learned (`learned_examples`)."""
    return TaskClassifier(training_prompts() + learned_examples(store, cap))
