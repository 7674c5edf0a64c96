#!/usr/bin/env python3
"""Generate the quickstart dataset: customer-support messages -> one-line JSON.

    python specs/data/make_support.py           # (re)write support-train.jsonl, support-eval.jsonl
    python specs/data/make_support.py --check   # exit 1 if the files on disk differ

Each row has three columns:

    message  a short customer message (about 15-40 words)
    answer   compact JSON, keys always in this order:
             {"intent":"refund","order_id":"48213","product":"blender","urgency":"high"}
    intent   the intent again, as its own column (for per-intent statistics)

What the answer holds, and where it comes from in the message:

    intent    one of INTENTS, decided by the message's wording
    order_id  the 5-digit order number copied from the message, or null when there is none
    product   the product category copied verbatim from the message (see PRODUCTS), or null
    urgency   "high" when the message says so (urgent, ASAP, today, ...), "low" when it
              says there is no hurry, "normal" otherwise

The design follows NOTES finding 5: a tiny model learns the intent within a few
hundred steps; copying the order id is the hard part, so ids are always exactly
5 digits (a tokenizer with split_digits turns them into 5 tokens) and messages
stay short so the whole example is 64-96 tokens. Other numbers that appear
("2 weeks ago", "3 of them") are 1-2 digits, so the order id is never ambiguous.

Deterministic: only the standard library, seeded `random.Random` instances, and
no dependence on dict or set iteration order. The eval file uses another seed,
order ids from a pool disjoint from the training ids, and no message text that
also appears in the training file.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import generated_files
from generated_files import render

HERE = Path(__file__).resolve().parent
TRAIN_FILE = HERE / "support-train.jsonl"
EVAL_FILE = HERE / "support-eval.jsonl"
TRAIN_ROWS = 4000
EVAL_ROWS = 200
TRAIN_SEED = 1234
EVAL_SEED = 98765
ID_POOL_SEED = 5  # splits the 90,000 possible ids into a train pool and an eval pool
EVAL_ID_POOL = 12_000
MIN_WORDS, MAX_WORDS = 14, 40

INTENTS = (
    "order_status",
    "cancel_order",
    "refund",
    "change_address",
    "damaged_item",
    "wrong_item",
    "delivery_delay",
    "account_help",
)

PRODUCTS = (
    "headphones",
    "laptop",
    "blender",
    "backpack",
    "jacket",
    "sneakers",
    "desk lamp",
    "coffee maker",
    "phone case",
    "monitor",
    "keyboard",
    "watch",
    "tent",
    "rug",
    "vacuum",
    "mug set",
    "office chair",
    "toaster",
    "speaker",
    "camera",
    "hoodie",
    "water bottle",
    "yoga mat",
    "kettle",
    "mouse",
    "printer",
    "sofa cover",
    "scarf",
    "bike helmet",
    "suitcase",
)

# ---------------------------------------------------------------- phrase banks

GREETINGS = (
    "",
    "",
    "",
    "Hi,",
    "Hi!",
    "Hello,",
    "Hello there,",
    "Hey,",
    "Hey there,",
    "Good morning,",
    "Good afternoon,",
    "Good evening,",
    "Dear support,",
    "Hi team,",
    "Hello support team,",
    "Hiya,",
    "Greetings,",
    "To whom it may concern,",
)

SIGNOFFS = (
    "",
    "",
    "",
    "Thanks!",
    "Thank you.",
    "Thanks in advance.",
    "Many thanks.",
    "Cheers, Sam",
    "Best, Maria",
    "Regards, Tom",
    "Thanks, Priya",
    "Kind regards.",
    "Appreciate it.",
    "Thank you so much for your help.",
    "Thanks a lot, Alex",
    "Have a nice day.",
)

HIGH = (
    "This is urgent.",
    "Please help ASAP!",
    "I need this fixed today.",
    "URGENT, please reply right away.",
    "Please treat this as urgent.",
    "I need an answer immediately.",
    "This is really urgent!!",
    "Please hurry, it is urgent.",
    "I need this sorted asap.",
    "Urgent: please respond today.",
)
HIGH_PREFIX = ("URGENT:", "Urgent -", "ASAP:", "Urgent!")
LOW = (
    "No rush.",
    "No hurry at all.",
    "Whenever you get a chance.",
    "Not urgent, just wondering.",
    "No rush, take your time.",
    "It's not urgent.",
    "Whenever is convenient for you.",
    "No hurry, just letting you know.",
    "Not in a hurry.",
)

# An order reference for a message that has an id; {id} is the 5 digits.
ORDER_WITH_ID = (
    "order {id}",
    "order #{id}",
    "order number {id}",
    "order no. {id}",
    "order #{id}",
    "order {id}",
    "order ID {id}",
    "order nr {id}",
)
# Used with "my"/"the" before it.
ORDER_WITHOUT_ID = ("order", "order", "recent order", "last order", "purchase")
# The id stated on its own, before or after the body.
ID_SENTENCE_AFTER = (
    "Order number: {id}.",
    "My order number is {id}.",
    "The order ID is {id}.",
    "Order #{id}.",
    "It was order {id}.",
    "(order {id})",
    "Ref: order {id}.",
    "Order no. {id}.",
)
ID_SENTENCE_BEFORE = ("Order {id}:", "Re: order #{id} -", "Order #{id} -", "Regarding order {id}:", "#{id}:")
NO_ID_EXCUSE = (
    "",
    "",
    "",
    "I don't have the order number handy.",
    "I lost the confirmation email.",
    "Sorry, I can't find the order number.",
    "I don't remember the order number.",
)

# Optional quantity / time detail with small numbers (never 5 digits).
WHEN = (
    "",
    "",
    "",
    "",
    "I ordered it {days} days ago.",
    "I placed it {weeks} weeks ago.",
    "It was ordered {days} days ago.",
    "I bought {count} of them.",
    "I paid for it {days} days ago.",
)

GENERIC_THING = ("my package", "the item", "my parcel", "the package", "my stuff", "the item I bought")
GENERIC_THING_BY_INTENT = {"wrong_item": ("what I ordered", "the item I ordered", "my actual item")}

# Body templates per intent. Slots:
#   {order}  "my order #48213" / "my order" (the reference, maybe with the id)
#   {thing}  "the blender" when a product is named, else a generic noun phrase
#   {prod}   the product alone: templates that use it always name a product
#   {when}   optional time/quantity sentence (filled separately)
BODIES: dict[str, tuple[str, ...]] = {
    "order_status": (
        "Can you tell me the status of {order}?",
        "Where is {order}? I would like to know when {thing} will ship.",
        "I want to check on {order}, has {thing} shipped yet?",
        "Could you give me an update on {order}?",
        "Has {order} been sent out yet? Just checking where {thing} is.",
        "What is the current status of {order} with {thing}?",
        "Any news on {order}? I'd like to track {thing}.",
        "Can I get a tracking update for {order}?",
        "I'm checking on the status of {order}, please let me know where it is.",
        "Is {order} on its way? Wondering about {thing}.",
    ),
    "cancel_order": (
        "I want to cancel {order}.",
        "Please cancel {order}, I changed my mind about {thing}.",
        "Can you cancel {order} before it ships?",
        "I would like to cancel {order} for {thing}, I ordered it by mistake.",
        "Please stop {order} and cancel it, I no longer need {thing}.",
        "I need to cancel {order}. I found {thing} somewhere else.",
        "Is it still possible to cancel {order}?",
        "Cancel {order} please, I placed it twice by accident.",
        "Kindly cancel {order}, I don't want {thing} anymore.",
    ),
    "refund": (
        "I returned {thing} from {order} and I'm still waiting for my refund.",
        "I would like a refund for {order}.",
        "Can I get my money back for {thing}? It was {order}.",
        "When will I receive the refund for {order}?",
        "I sent back {thing} last week, please refund {order}.",
        "Please process a refund for {order}, I was charged twice.",
        "I'd like to request a refund for {thing} from {order}.",
        "My refund for {order} has not shown up on my card yet.",
        "How long does the refund for {order} take? I returned {thing}.",
    ),
    "change_address": (
        "I need to change the shipping address for {order}.",
        "Can you update the delivery address on {order}? I just moved.",
        "Please send {order} to my new address instead.",
        "I entered the wrong address for {order}, can I change it?",
        "Could you ship {thing} from {order} to a different address?",
        "I moved last week, please change the address on {order}.",
        "Is it possible to update the address for {order} before it ships?",
        "Please redirect {order} to my office address.",
        "The address on {order} has a typo, can you correct it?",
    ),
    "damaged_item": (
        "{Thing} from {order} arrived broken.",
        "{Thing} in {order} was damaged when it arrived.",
        "I received {order} but {thing} is cracked.",
        "{Thing} from {order} came smashed, the box was crushed.",
        "{order_cap} arrived today and {thing} is damaged.",
        "{Thing} I got in {order} is broken and does not work.",
        "Unfortunately {thing} from {order} arrived with a big dent.",
        "{Thing} from {order} showed up scratched and broken.",
        "I opened {order} and {thing} was shattered.",
    ),
    "wrong_item": (
        "I received the wrong item in {order}, I ordered {a_prod}.",
        "{order_cap} arrived but it's not {thing}, you sent me something else.",
        "You sent the wrong product for {order}. I was expecting {a_prod}.",
        "The package for {order} has the wrong item in it instead of {thing}.",
        "I got someone else's item in {order}, not {thing}.",
        "{order_cap} contained the wrong size and color of {thing}.",
        "Wrong item delivered for {order}, where is {thing}?",
        "This is not what I ordered, {order} should have been {a_prod}.",
        "I got a completely different item than {thing} in {order}.",
    ),
    "delivery_delay": (
        "{order_cap} still hasn't arrived and it is past the delivery date.",
        "{order_cap} is late, {thing} was supposed to be here already.",
        "Why is {order} taking so long? {Thing} should have arrived by now.",
        "The delivery of {order} is delayed, the tracking has not moved in days.",
        "{order_cap} was due last week and I still don't have {thing}.",
        "My delivery is late, {order} has not shown up yet.",
        "{order_cap} is overdue, the estimated date has passed.",
        "The courier keeps delaying {order}, still no sign of {thing}.",
        "{order_cap} is stuck in transit and hasn't been delivered.",
    ),
    "account_help": (
        "I can't log in to my account, it says my password is wrong.",
        "How do I reset my password? The reset email never arrives.",
        "My account is locked after too many login attempts.",
        "I need to change the email address on my account.",
        "I can't sign in to my account on the app anymore.",
        "Please help me delete my account and my data.",
        "I forgot my password and the reset link has expired.",
        "How can I update the phone number on my account?",
        "I never got the verification email for my new account.",
        "Someone else may have accessed my account, please help me secure it.",
        "My account shows the wrong name, how do I change it?",
    ),
}

# Typos and informal spellings applied to a few non-critical words (never to the
# order id, product names or the urgency words).
TYPOS = (
    ("received", "recieved"),
    ("address", "adress"),
    ("please", "pls"),
    ("Please", "Pls"),
    ("package", "pakage"),
    ("arrived", "arived"),
    ("cancel", "cancle"),
    ("account", "acount"),
    ("would", "wuold"),
    ("because", "becuase"),
    ("thanks", "thx"),
    ("Thanks", "Thx"),
    ("still", "stil"),
    ("delivery", "delivary"),
    ("password", "pasword"),
    ("know", "kno"),
    ("you", "u"),
    ("already", "allready"),
    ("refund", "refnud"),
    ("wrong", "wrnog"),
)
# A word that is the main cue of its intent keeps its spelling there ("refund" in a
# refund request, "wrong" in a wrong-item message); elsewhere it may get a typo.
TYPO_SKIP = {"refund": ("refund",), "wrong_item": ("wrong",), "cancel_order": ("cancel",)}


def _article(product: str) -> str:
    return ("an " if product[0] in "aeiou" else "a ") + product


class Maker:
    def __init__(self, seed: int, ids: list[str]):
        self.rng = random.Random(seed)
        self.ids = ids  # consumed from the end, so every id appears once

    def pick(self, options):
        return options[self.rng.randrange(len(options))]

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def row(self, intent: str) -> dict:
        rng = self.rng
        has_id = intent != "account_help" and self.chance(0.82)
        order_id = self.ids.pop() if has_id else None
        has_product = intent != "account_help" and self.chance(0.6)
        product = self.pick(PRODUCTS) if has_product else None
        urgency = "high" if self.chance(0.25) else ("low" if self.chance(0.25) else "normal")

        body = self.pick(BODIES[intent])
        needs_product = "{a_prod}" in body
        if needs_product and product is None:
            product = self.pick(PRODUCTS) if intent != "account_help" else None

        # where the id goes: inside the order phrase, or in its own sentence before/after
        placement = self.pick(("inline", "inline", "inline", "after", "before")) if order_id else "none"
        my = self.pick(("my ", "my ", "the ", "my ")) if "{order}" in body or "{order_cap}" in body else ""
        if placement == "inline":
            order_phrase = my + self.pick(ORDER_WITH_ID).format(id=order_id)
        else:
            order_phrase = my + self.pick(ORDER_WITHOUT_ID)
        thing = (
            self.pick(("the ", "my ", "the ")) + product
            if product
            else self.pick(GENERIC_THING_BY_INTENT.get(intent, GENERIC_THING))
        )
        text = body.format(
            order=order_phrase,
            order_cap=order_phrase[:1].upper() + order_phrase[1:],
            thing=thing,
            Thing=thing[:1].upper() + thing[1:],
            a_prod=_article(product) if product else "",
        )
        if product and not any(slot in body for slot in ("{thing}", "{Thing}", "{a_prod}")):
            # the template had no {thing} slot: mention the product in a short clause
            text += " " + self.pick(
                ("It's for the {p}.", "This is about the {p}.", "The item is {a}.", "It's the {p} I bought.")
            ).format(p=product, a=_article(product))

        parts = [text]
        when = self.pick(WHEN)
        if when and intent != "account_help":
            parts.append(when.format(days=rng.randint(2, 12), weeks=rng.randint(2, 4), count=rng.randint(2, 4)))
        if order_id is None and intent != "account_help":
            excuse = self.pick(NO_ID_EXCUSE)
            if excuse:
                parts.append(excuse)
        if placement == "after":
            parts.append(self.pick(ID_SENTENCE_AFTER).format(id=order_id))
        if urgency == "high":
            if self.chance(0.25):
                parts.insert(0, self.pick(HIGH_PREFIX))
            else:
                parts.insert(self.rng.randint(1, len(parts)), self.pick(HIGH))
        elif urgency == "low":
            parts.insert(self.rng.randint(1, len(parts)), self.pick(LOW))
        if placement == "before":
            parts.insert(0, self.pick(ID_SENTENCE_BEFORE).format(id=order_id))
        greeting = self.pick(GREETINGS)
        if greeting and not parts[0].startswith(("URGENT", "Urgent", "ASAP", "Order", "Re:", "Regarding", "#")):
            first = parts[0]
            if greeting.endswith(",") and not first.startswith(("I ", "I'")) and self.chance(0.5):
                parts[0] = first[:1].lower() + first[1:]
            parts.insert(0, greeting)
        signoff = self.pick(SIGNOFFS)
        if signoff:
            parts.append(signoff)
        message = " ".join(parts)

        if self.chance(0.18):
            message = self._typo(message, intent)
        if self.chance(0.08):
            message = message.lower()
        answer = {"intent": intent, "order_id": order_id, "product": product, "urgency": urgency}
        return {"message": message, "answer": json.dumps(answer, separators=(",", ":")), "intent": intent}

    def _typo(self, message: str, intent: str) -> str:
        words = message.split(" ")
        candidates = []
        for index, word in enumerate(words):
            core = word.strip(".,!?:;()")
            for right, wrong in TYPOS:
                if core == right and right not in TYPO_SKIP.get(intent, ()):
                    candidates.append((index, right, wrong))
        if not candidates:
            return message
        index, right, wrong = candidates[self.rng.randrange(len(candidates))]
        words[index] = words[index].replace(right, wrong, 1)
        return " ".join(words)


def id_pools() -> tuple[list[str], list[str]]:
    """All 5-digit ids 10000-99999, shuffled once; the first EVAL_ID_POOL are eval's."""
    ids = [str(n) for n in range(10000, 100000)]
    random.Random(ID_POOL_SEED).shuffle(ids)
    return ids[EVAL_ID_POOL:], ids[:EVAL_ID_POOL]


def generate(count: int, seed: int, ids: list[str], balanced: bool, exclude: set[str] = frozenset()) -> list[dict]:
    maker = Maker(seed, list(ids))
    rows, seen = [], set(exclude)
    while len(rows) < count:
        intent = INTENTS[len(rows) % len(INTENTS)] if balanced else maker.pick(INTENTS)
        row = maker.row(intent)
        words = len(row["message"].split())
        if not MIN_WORDS <= words <= MAX_WORDS or row["message"] in seen:
            continue
        seen.add(row["message"])
        rows.append(row)
    if balanced:
        maker.rng.shuffle(rows)
    return rows


def build() -> dict[Path, bytes]:
    train_ids, eval_ids = id_pools()
    train = generate(TRAIN_ROWS, TRAIN_SEED, train_ids, balanced=False)
    evaluation = generate(EVAL_ROWS, EVAL_SEED, eval_ids, balanced=True, exclude={r["message"] for r in train})
    return {TRAIN_FILE: render(train), EVAL_FILE: render(evaluation)}


def main(argv: list[str] | None = None) -> int:
    return generated_files.main(build, __doc__.split("\n")[0], Path(__file__).name, argv)


if __name__ == "__main__":
    sys.exit(main())
