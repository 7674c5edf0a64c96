#!/usr/bin/env python3
"""Generate the two smaller sources of specs/support-chat.sft.

    python specs/data/make_faq_chats.py           # (re)write faq.jsonl and chats.jsonl
    python specs/data/make_faq_chats.py --check   # exit 1 if the files on disk differ

faq.jsonl    columns `question`, `answer`, `topic`: a store's policy questions, several
             phrasings per topic, each topic with one canonical answer.
chats.jsonl  column `messages`: multi-turn conversations, a list of
             {"role": "system"|"user"|"assistant", "content": "..."} objects,
             plus `topic`.

Deterministic: standard library only, one seeded `random.Random` per file.
The store, its policies and every name are made up.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import generated_files
from generated_files import render

HERE = Path(__file__).resolve().parent
FAQ_FILE = HERE / "faq.jsonl"
CHATS_FILE = HERE / "chats.jsonl"
FAQ_SEED = 31
CHATS_SEED = 32
CHAT_ROWS = 100
STORE = "Parcelly"

# topic -> (canonical answer, question phrasings)
FAQ: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "returns_window",
        "You can return most items within 30 days of delivery for a full refund. Items must be unused and in their original packaging.",
        (
            "How long do I have to return an item?",
            "What is your return policy?",
            "Can I still return something I bought three weeks ago?",
            "How many days do I have to send something back?",
            "Is there a time limit on returns?",
        ),
    ),
    (
        "return_shipping",
        "Return shipping is free for damaged or wrong items. For other returns a flat fee of 4.95 is deducted from your refund.",
        (
            "Do I have to pay for return shipping?",
            "Is return shipping free?",
            "Who pays the postage when I send something back?",
            "How much does it cost to return an item?",
            "Will you charge me for the return label?",
        ),
    ),
    (
        "refund_time",
        "Refunds are issued within 3 business days after your return arrives at our warehouse. Your bank may take another 5 to 7 days to show it.",
        (
            "How long does a refund take?",
            "When will I get my money back?",
            "I sent my return, when is the refund processed?",
            "How many days until the refund shows on my card?",
            "How quickly do you refund returns?",
        ),
    ),
    (
        "shipping_time",
        "Standard shipping takes 3 to 5 business days. Express shipping arrives in 1 to 2 business days.",
        (
            "How long does shipping take?",
            "When will my order arrive?",
            "What are your delivery times?",
            "How many days does standard delivery take?",
            "How fast is express shipping?",
        ),
    ),
    (
        "shipping_cost",
        "Standard shipping is free on orders over 50. Below that it costs 4.99, and express shipping costs 9.99.",
        (
            "How much is shipping?",
            "Do you offer free shipping?",
            "What does delivery cost?",
            "Is there a minimum order for free shipping?",
            "How much does express delivery cost?",
        ),
    ),
    (
        "international",
        "We currently ship to the US, Canada, the UK and most of the EU. Import duties are shown at checkout.",
        (
            "Do you ship internationally?",
            "Can you deliver to Canada?",
            "Which countries do you ship to?",
            "Do you deliver to the UK?",
            "Will I pay customs fees on international orders?",
        ),
    ),
    (
        "tracking",
        "You get a tracking link by email as soon as your order ships. You can also find it under Orders in your account.",
        (
            "How can I track my order?",
            "Where do I find my tracking number?",
            "Do you send a tracking link?",
            "How do I see where my package is?",
            "I never got a tracking number, where can I find it?",
        ),
    ),
    (
        "cancel",
        "You can cancel an order within 1 hour of placing it from the Orders page. After that, contact us and we will try to stop it before it ships.",
        (
            "How do I cancel an order?",
            "Can I cancel my order after placing it?",
            "Is it too late to cancel my purchase?",
            "What is the cancellation policy?",
            "How long do I have to cancel an order?",
        ),
    ),
    (
        "change_address",
        "You can change the shipping address until the order ships. Open the order in your account and choose Edit address, or write to us.",
        (
            "Can I change my shipping address?",
            "How do I update the delivery address on an order?",
            "I moved, can I change where my order goes?",
            "Is it possible to edit the address after ordering?",
            "I typed the wrong address, what should I do?",
        ),
    ),
    (
        "payment_methods",
        "We accept Visa, Mastercard, American Express, PayPal and Apple Pay. Gift cards can be combined with any of them.",
        (
            "What payment methods do you accept?",
            "Can I pay with PayPal?",
            "Do you take American Express?",
            "Which cards can I use?",
            "Can I pay with Apple Pay?",
        ),
    ),
    (
        "gift_cards",
        "Gift cards are sold in amounts from 10 to 200 and never expire. Enter the code at checkout to use one.",
        (
            "Do you sell gift cards?",
            "Do gift cards expire?",
            "How do I use a gift card?",
            "What amounts do gift cards come in?",
            "Where do I enter my gift card code?",
        ),
    ),
    (
        "damaged",
        "We are sorry about that. Send us a photo of the damage with your order number and we will ship a free replacement or refund you in full.",
        (
            "My item arrived damaged, what now?",
            "What do I do if my order is broken?",
            "The product came cracked, can you help?",
            "How do I report a damaged delivery?",
            "My package was crushed and the item is broken.",
        ),
    ),
    (
        "wrong_item",
        "We are sorry for the mix-up. Tell us your order number and what you received, and we will send the right item with a free return label.",
        (
            "I received the wrong item, what should I do?",
            "You sent me the wrong product.",
            "What happens if my order has the wrong item?",
            "The item I got is not what I ordered.",
            "How do I exchange a wrong item?",
        ),
    ),
    (
        "password",
        "Use Forgot password on the sign-in page and we will email you a reset link that is valid for 1 hour.",
        (
            "How do I reset my password?",
            "I forgot my password.",
            "The password reset link expired, what do I do?",
            "How can I change my password?",
            "I can't remember my login password.",
        ),
    ),
    (
        "delete_account",
        "You can delete your account under Settings, then Privacy. Your data is erased within 30 days.",
        (
            "How do I delete my account?",
            "Can you remove my personal data?",
            "I want to close my account.",
            "How do I erase my account and data?",
            "Where is the option to delete my profile?",
        ),
    ),
    (
        "warranty",
        "Electronics come with a 2 year warranty and everything else with 1 year. Contact us with your order number to make a claim.",
        (
            "Do your products have a warranty?",
            "How long is the warranty?",
            "My headphones stopped working after a year, are they covered?",
            "How do I make a warranty claim?",
            "Is there a guarantee on electronics?",
        ),
    ),
    (
        "price_match",
        "We match the price of major retailers within 14 days of your purchase. Send us a link to the lower price.",
        (
            "Do you price match?",
            "I found it cheaper elsewhere, can you match it?",
            "What is your price match policy?",
            "Can I get the difference back if the price drops?",
            "Will you match a competitor's price?",
        ),
    ),
    (
        "exchange",
        "To exchange an item for another size or color, return it and place a new order. Exchanges for the same item ship for free.",
        (
            "Can I exchange an item for a different size?",
            "How do exchanges work?",
            "I need a different color, can I swap it?",
            "Is exchanging an item free?",
            "How do I swap my order for another size?",
        ),
    ),
    (
        "contact",
        "You can reach us by chat every day from 8 am to 8 pm, or by email at any time. We answer emails within 24 hours.",
        (
            "How can I contact customer service?",
            "What are your support hours?",
            "Is there a phone number or chat?",
            "How fast do you answer emails?",
            "When is live chat available?",
        ),
    ),
    (
        "order_missing",
        "If tracking says delivered but you cannot find the package, check with neighbors and wait one more day. Then contact us and we will investigate.",
        (
            "Tracking says delivered but I have nothing.",
            "My package is marked delivered but it is not here.",
            "What if my order is lost?",
            "The courier says it was delivered but I never got it.",
            "My parcel is missing, what should I do?",
        ),
    ),
)

# (prefix, suffix) around a question; after "Hi, " the question continues in lower case
FAQ_VARIANTS = (("", ""), ("", ""), ("Hi, ", ""), ("Quick question: ", ""), ("", " Thanks!"), ("Hello! ", ""))


def make_faq() -> list[dict]:
    rng = random.Random(FAQ_SEED)
    rows = []
    for topic, answer, questions in FAQ:
        for question in questions:
            prefix, suffix = FAQ_VARIANTS[rng.randrange(len(FAQ_VARIANTS))]
            if prefix.endswith((", ", ": ")) and not question.startswith(("I ", "I'")):
                question = question[:1].lower() + question[1:]
            rows.append({"question": prefix + question + suffix, "answer": answer, "topic": topic})
    rng.shuffle(rows)
    return rows


# ---------------------------------------------------------------- chats

SYSTEM = (
    f"You are the customer support assistant of {STORE}, an online store. Be brief, friendly and precise.",
    f"You help {STORE} customers with orders, returns and accounts. Answer in one or two sentences.",
    f"You are {STORE}'s support agent. Ask for the order number when you need it.",
)
PRODUCTS = (
    "headphones",
    "blender",
    "backpack",
    "jacket",
    "desk lamp",
    "coffee maker",
    "monitor",
    "kettle",
    "tent",
    "yoga mat",
)
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")


def _order_id(rng: random.Random, used: set[str]) -> str:
    while True:
        candidate = str(rng.randint(10000, 99999))
        if candidate not in used:
            used.add(candidate)
            return candidate


def chat_status(rng, oid, product):
    day = DAYS[rng.randrange(len(DAYS))]
    return [
        (
            "user",
            rng.choice(
                (
                    f"Hi, where is my {product}?",
                    f"Can you check on my order? It's a {product}.",
                    f"Has my {product} shipped yet?",
                )
            ),
        ),
        ("assistant", "Happy to check. What is your order number?"),
        ("user", rng.choice((f"It's {oid}.", f"Order {oid}.", f"#{oid}"))),
        (
            "assistant",
            f"Order {oid} shipped yesterday and should arrive on {day}. You will get a tracking link by email.",
        ),
    ]


def chat_cancel(rng, oid, product):
    turns = [
        (
            "user",
            rng.choice(
                (f"I want to cancel order {oid}.", f"Please cancel my order {oid}, I ordered the {product} by mistake.")
            ),
        ),
    ]
    if rng.random() < 0.5:
        turns += [
            (
                "assistant",
                f"Order {oid} has not shipped yet, so I cancelled it. Your refund will arrive within 3 business days.",
            ),
            ("user", "Great, thank you!"),
            ("assistant", "You're welcome. Is there anything else I can help with?"),
        ]
    else:
        turns += [
            (
                "assistant",
                f"Order {oid} has already shipped, so I can't cancel it. Once it arrives you can return it within 30 days for a refund.",
            ),
            ("user", "Is the return free?"),
            ("assistant", "Returns cost a flat 4.95, deducted from your refund, unless the item is damaged or wrong."),
        ]
    return turns


def chat_damaged(rng, oid, product):
    return [
        ("user", f"My {product} arrived broken."),
        ("assistant", "I'm sorry to hear that. Could you send me the order number and a photo of the damage?"),
        ("user", f"Order {oid}, I just uploaded the photo."),
        (
            "assistant",
            f"Thank you. I've arranged a free replacement {product} for order {oid}; it ships within 2 business days.",
        ),
        ("user", "Do I need to send the broken one back?"),
        ("assistant", "No, you can keep or recycle it."),
    ]


def chat_refund(rng, oid, product):
    days = rng.randint(4, 9)
    return [
        ("user", f"I returned the {product} {days} days ago and still have no refund."),
        ("assistant", "Let me look into it. What is the order number?"),
        ("user", f"{oid}"),
        (
            "assistant",
            f"Your return for order {oid} arrived and the refund was issued today. Your bank may take 5 to 7 days to show it.",
        ),
    ]


def chat_address(rng, oid, product):
    street = rng.choice(("Oak Street", "Maple Avenue", "Harbor Road", "Pine Lane", "Mill Road"))
    number = rng.randint(2, 98)
    return [
        ("user", f"Can I change the delivery address for order {oid}?"),
        ("assistant", "Yes, if it hasn't shipped yet. What is the new address?"),
        ("user", f"{number} {street}, same city."),
        ("assistant", f"Done: order {oid} will now go to {number} {street}."),
    ]


def chat_password(rng, oid, product):
    return [
        (
            "user",
            rng.choice(("I can't log in to my account.", "I forgot my password.", "My password doesn't work anymore.")),
        ),
        (
            "assistant",
            "Use Forgot password on the sign-in page and we'll email you a reset link. It is valid for 1 hour.",
        ),
        ("user", "The email never arrived."),
        (
            "assistant",
            "Please check your spam folder. If it isn't there, tell me the email address on the account and I'll resend it.",
        ),
    ]


CHATS = (
    ("order_status", chat_status),
    ("cancel_order", chat_cancel),
    ("damaged_item", chat_damaged),
    ("refund", chat_refund),
    ("change_address", chat_address),
    ("account_help", chat_password),
)


def make_chats() -> list[dict]:
    rng = random.Random(CHATS_SEED)
    used: set[str] = set()
    rows = []
    for index in range(CHAT_ROWS):
        topic, make = CHATS[index % len(CHATS)]
        oid = _order_id(rng, used)
        product = PRODUCTS[rng.randrange(len(PRODUCTS))]
        messages = [{"role": "system", "content": SYSTEM[rng.randrange(len(SYSTEM))]}] if rng.random() < 0.7 else []
        messages += [{"role": role, "content": text} for role, text in make(rng, oid, product)]
        rows.append({"messages": messages, "topic": topic})
    rng.shuffle(rows)
    return rows


def build() -> dict[Path, bytes]:
    return {FAQ_FILE: render(make_faq()), CHATS_FILE: render(make_chats())}


def main(argv: list[str] | None = None) -> int:
    return generated_files.main(build, __doc__.split("\n")[0], Path(__file__).name, argv)


if __name__ == "__main__":
    sys.exit(main())
