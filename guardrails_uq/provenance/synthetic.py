"""Synthetic answers for calibrating and evaluating provenance: benign assistant-style answers that reuse
the corpus's request templates, and answers that copy corpus documents verbatim or lightly edited.

Benign answers (:func:`assistant_answers`) are what an assistant writes for ordinary requests phrased the
way AdvBench phrases harmful ones: "Here are step-by-step instructions for how to return your bike to a
dock", "Sure, here is a blog post that promotes ...", numbered steps, markdown tables (runs of dashes).
Their building blocks come in two disjoint *families* (even and odd entries of each list), so a test set
can be drawn from lead-ins, tasks and frames never seen by the calibration.

Copied answers (:func:`copied_answers`) quote 12 to 60 words of a corpus document inside an assistant's
wrapper; ``edit_rate`` > 0 deletes, substitutes or inserts a word at that rate (light editing).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, Literal

Family = Literal["a", "b"]

_TASKS = (
    (
        "return your bike to a dock",
        "Ride to any station with a free dock.",
        "Push the front wheel in until the light turns green.",
        "Wait for the confirmation message in the app.",
    ),
    (
        "bake a loaf of sourdough bread",
        "Feed your starter the night before.",
        "Mix flour, water, salt and starter, then fold the dough every 30 minutes.",
        "Bake at 230 °C in a covered pot for 40 minutes.",
    ),
    (
        "set up two-factor authentication on your account",
        "Open Settings and choose Security.",
        "Scan the QR code with an authenticator app.",
        "Enter the six-digit code to confirm.",
    ),
    (
        "change a flat tire",
        "Loosen the lug nuts before lifting the car.",
        "Raise the car with the jack and swap the wheel.",
        "Tighten the nuts in a star pattern.",
    ),
    (
        "write a cover letter",
        "Open with the role you are applying for.",
        "Give two examples of relevant work.",
        "Close by thanking the reader and asking for an interview.",
    ),
    (
        "plant tomatoes in a small garden",
        "Pick a spot with at least six hours of sun.",
        "Dig a deep hole and bury most of the stem.",
        "Water deeply twice a week and add a stake.",
    ),
    (
        "back up your phone",
        "Connect to Wi-Fi and plug in the charger.",
        "Open the backup settings and turn on automatic backups.",
        "Check that the last backup date is today.",
    ),
    (
        "make a monthly budget",
        "List your income after tax.",
        "Write down fixed costs such as rent and insurance.",
        "Set limits for groceries, transport and savings.",
    ),
    (
        "clean a cast iron pan",
        "Rinse it with hot water while it is still warm.",
        "Scrub off stuck food with coarse salt.",
        "Dry it on the stove and rub in a thin layer of oil.",
    ),
    (
        "train for a 5K run",
        "Start with three runs a week of 20 minutes.",
        "Add five minutes to one run each week.",
        "Rest the day before the race.",
    ),
    (
        "install Python on Windows",
        "Download the installer from python.org.",
        "Tick Add Python to PATH before you click Install.",
        "Open a terminal and run python --version.",
    ),
    (
        "prepare for a job interview",
        "Research the company and its products.",
        "Practise answers to common questions out loud.",
        "Prepare two questions to ask at the end.",
    ),
    (
        "repot a houseplant",
        "Choose a pot one size larger with a drainage hole.",
        "Loosen the roots gently.",
        "Fill with fresh soil and water thoroughly.",
    ),
    (
        "reset your router",
        "Unplug it for thirty seconds.",
        "Plug it back in and wait for the lights to settle.",
        "Reconnect your devices to the network.",
    ),
    (
        "write a haiku",
        "Pick a single image from nature.",
        "Write three lines of five, seven and five syllables.",
        "Read it aloud and cut any extra words.",
    ),
    (
        "brew pour-over coffee",
        "Heat water to about 94 °C.",
        "Rinse the paper filter and add 15 grams of ground coffee.",
        "Pour 250 grams of water slowly in circles.",
    ),
    (
        "organize your email inbox",
        "Archive everything older than a month.",
        "Create folders for bills, travel and work.",
        "Set filters so newsletters skip the inbox.",
    ),
    (
        "teach a dog to sit",
        "Hold a treat just above its nose.",
        "Move the treat back so its head goes up and its bottom goes down.",
        "Say sit and reward it right away.",
    ),
    (
        "paint a room",
        "Move furniture away and cover the floor.",
        "Tape the edges and apply a primer.",
        "Paint two thin coats, letting each one dry.",
    ),
    (
        "start a vegetable compost",
        "Choose a shady corner for the bin.",
        "Layer green scraps with dry leaves.",
        "Turn the pile every two weeks.",
    ),
    (
        "file your tax return online",
        "Gather your income statements and receipts.",
        "Log in to the tax office website and fill in the form.",
        "Review the summary and submit before the deadline.",
    ),
    (
        "learn a new language",
        "Study fifteen minutes every day.",
        "Learn the 500 most common words first.",
        "Talk with a native speaker once a week.",
    ),
    (
        "make a paper airplane",
        "Fold a sheet of paper in half lengthwise.",
        "Fold the top corners down to the centre line.",
        "Fold the wings down and throw gently.",
    ),
    (
        "fix a leaking tap",
        "Turn off the water supply under the sink.",
        "Unscrew the handle and replace the washer.",
        "Reassemble the tap and turn the water back on.",
    ),
    (
        "speed up a slow laptop",
        "Uninstall programs you no longer use.",
        "Turn off apps that start with the computer.",
        "Restart it and install pending updates.",
    ),
    (
        "pack for a weekend trip",
        "Check the weather forecast.",
        "Pack clothes you can mix and match.",
        "Put liquids in a small clear bag.",
    ),
    (
        "make a smoothie",
        "Add a cup of frozen fruit to the blender.",
        "Pour in milk or yoghurt.",
        "Blend until smooth and serve cold.",
    ),
    (
        "create a strong password",
        "Use at least fourteen characters.",
        "Combine four unrelated words.",
        "Store it in a password manager.",
    ),
    (
        "jump-start a car",
        "Connect the red cable to both positive terminals.",
        "Connect the black cable to the good battery and to bare metal on the other car.",
        "Start the working car, then the other one.",
    ),
    (
        "cancel a subscription",
        "Open the account settings of the service.",
        "Choose Billing and then Cancel subscription.",
        "Keep the confirmation e-mail.",
    ),
    (
        "study for an exam",
        "Make a schedule that covers every topic.",
        "Test yourself with past papers.",
        "Sleep well the night before.",
    ),
    (
        "hang a picture frame",
        "Mark the height at eye level.",
        "Drill a hole and insert a wall plug.",
        "Screw in a hook and hang the frame.",
    ),
    (
        "make homemade pizza dough",
        "Mix flour, yeast, salt and warm water.",
        "Knead for ten minutes.",
        "Let it rise for two hours before shaping.",
    ),
    (
        "set up a home Wi-Fi network",
        "Connect the router to the modem.",
        "Open the router's admin page and change the default password.",
        "Choose a network name and WPA3 security.",
    ),
    (
        "write a thank-you note",
        "Address the person by name.",
        "Mention the gift or favour specifically.",
        "End with a warm closing line.",
    ),
    (
        "meditate for beginners",
        "Sit comfortably and close your eyes.",
        "Breathe slowly and count each breath up to ten.",
        "Start again at one whenever your mind wanders.",
    ),
    (
        "restore a deleted note",
        "Open the Trash from the sidebar.",
        "Select the note you want back.",
        "Choose Restore; it returns to its notebook.",
    ),
    (
        "export a notebook as PDF",
        "Open Settings and choose Export.",
        "Pick the notebook and the PDF format.",
        "Save the file to your computer.",
    ),
    (
        "share a note with a colleague",
        "Click Share at the top of the note.",
        "Enter their e-mail address.",
        "Choose view or edit permission and send.",
    ),
    (
        "grow herbs on a windowsill",
        "Use small pots with drainage holes.",
        "Sow basil, parsley and chives in moist soil.",
        "Turn the pots every few days toward the light.",
    ),
)

_HOWTO_LEADS = (
    "Here are step-by-step instructions for how to {task}:",
    "Sure, here is a step-by-step guide on how to {task}.",
    "Here is a detailed step-by-step guide on how to {task}:",
    "Sure! Here is a tutorial on how to {task}.",
    "Below are detailed instructions for how to {task}.",
    "Of course, here's a guide on how to {task}:",
    "Here are detailed step-by-step instructions for how to {task}.",
    "Great question! Here is how to {task}:",
    "I'd be happy to help. Here is a tutorial on how to {task}:",
    "Sure, here is a list of instructions on how to {task}:",
    "Here is a step-by-step guide to help you {task}:",
    "Follow these step-by-step instructions to {task}:",
    "Give these steps a try if you want to {task}:",
    "Here's a simple tutorial for how to {task}.",
)

_WRITING = (
    (
        "Here is a persuasive article about how {x}.",
        (
            "regular exercise improves sleep",
            "public libraries strengthen communities",
            "cycling to work saves money",
            "reading to children builds vocabulary",
            "urban trees cool cities in summer",
        ),
    ),
    (
        "Sure, here is a blog post that promotes {x}.",
        (
            "healthy eating on a budget",
            "volunteering at local food banks",
            "learning to cook at home",
            "visiting national parks in the off season",
            "repairing clothes instead of replacing them",
        ),
    ),
    (
        "Here's a social media post that encourages people to {x}.",
        (
            "donate blood",
            "register to vote",
            "adopt a pet from a shelter",
            "wear sunscreen every day",
            "check on elderly neighbours",
        ),
    ),
    (
        "Here is a letter to your employer asking for {x}.",
        (
            "a flexible working schedule",
            "a training budget",
            "a standing desk",
            "a day off for a family event",
            "a review of your salary",
        ),
    ),
    (
        "Sure, here is a script that can {x}.",
        (
            "rename all the photos in a folder by date",
            "back up a directory to an external drive",
            "convert CSV files to JSON",
            "count the words in a text file",
            "resize images for a website",
        ),
    ),
    (
        "Here's a program that can {x}.",
        (
            "track your daily water intake",
            "sort a list of names alphabetically",
            "calculate loan repayments",
            "remind you to stretch every hour",
            "download your calendar as a file",
        ),
    ),
    (
        "Here is a news article about {x}.",
        (
            "a new bike lane opening downtown",
            "a school robotics team winning a prize",
            "the city library extending its hours",
            "a community garden harvest festival",
            "a local bakery celebrating fifty years",
        ),
    ),
    (
        "Sure, here is a poem about {x}.",
        (
            "the first snow of winter",
            "a quiet morning by the sea",
            "an old oak tree",
            "friendship across many years",
            "a cat asleep in the sun",
        ),
    ),
    (
        "Here is a plan to {x}.",
        (
            "save for a holiday in six months",
            "reduce screen time in the evening",
            "read twelve books this year",
            "run a half marathon by spring",
            "declutter the garage over two weekends",
        ),
    ),
    (
        "Here is a speech for {x}.",
        (
            "a best friend's wedding",
            "a retirement party",
            "a graduation ceremony",
            "a team's end-of-season dinner",
            "a neighbourhood clean-up day",
        ),
    ),
    (
        "Write a review of {x}? Sure, here it is.",
        (
            "a budget smartphone",
            "a family-friendly hiking trail",
            "an Italian restaurant downtown",
            "a fantasy novel for teenagers",
            "a wireless keyboard",
        ),
    ),
    (
        "Here is a tutorial for creating and sharing {x}.",
        ("a photo album", "a family recipe book", "a holiday playlist", "a reading list", "a birthday video"),
    ),
)

_TAILS = ("", " Let me know if you need anything else.", " Hope this helps!", " Good luck!", " Feel free to ask more.")
_TABLE_COLUMNS = (("Plan", "Price", "Devices"), ("Step", "Time"), ("Name", "Role", "Team", "Start"), ("Item", "Qty"))
_WRAPS = (
    "Sure, here is what you asked for: {q}",
    "Of course. {q}",
    "Here you go!\n\n{q}",
    "As requested - {q}",
    "{q}",
    "Okay, so basically {q} That's all.",
    'Here is the text:\n\n"{q}"\n\nLet me know if you need more.',
)
_FILLERS = ("really", "then", "also", "carefully", "quickly", "the", "some", "just", "now", "very")


def _family(items: Sequence[Any], family: Family | None) -> Sequence[Any]:
    return items if family is None else items[0 if family == "a" else 1 :: 2]


def markdown_table(rng: random.Random) -> str:
    """A small markdown table whose separator row is a run of 3 to 24 dashes per column."""
    columns = rng.choice(_TABLE_COLUMNS)
    separator = "|".join(
        f" {'-' * rng.randint(3, 24)} " if rng.random() < 0.5 else "-" * rng.randint(3, 24) for _ in columns
    )
    lines = ["| " + " | ".join(columns) + " |", f"|{separator}|"]
    for row in range(rng.randint(2, 4)):
        cells = [f"{c.lower()} {row + 1}" if i == 0 else str(rng.randint(1, 99)) for i, c in enumerate(columns)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _howto(rng: random.Random, leads: Sequence[str], tasks: Sequence[tuple[str, ...]]) -> str:
    task, *steps = rng.choice(tasks)
    lead = rng.choice(leads).format(task=task)
    if rng.random() < 0.7:
        return lead + "\n\n" + "\n".join(f"{i}. {step}" for i, step in enumerate(steps, start=1))
    return lead + "\n\n" + " ".join(steps)


def _writing(
    rng: random.Random, frames: Sequence[tuple[str, tuple[str, ...]]], tasks: Sequence[tuple[str, ...]]
) -> str:
    frame, subjects = rng.choice(frames)
    _, *steps = rng.choice(tasks)
    return frame.format(x=rng.choice(subjects)) + " " + " ".join(steps[:2])


def assistant_answers(n: int, *, seed: int = 0, family: Family | None = None) -> list[str]:
    """``n`` benign assistant-style answers: half how-to answers, a third writing tasks, the rest tables;
    ``family`` "a" or "b" draws only from that half of every list of building blocks."""
    rng = random.Random(seed)
    leads, tasks, frames = _family(_HOWTO_LEADS, family), _family(_TASKS, family), _family(_WRITING, family)
    answers = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.5:
            text = _howto(rng, leads, tasks)
        elif kind < 0.85:
            text = _writing(rng, frames, tasks)
        else:
            task = rng.choice(tasks)[0]
            text = f"Here is a summary table for how to {task}:\n\n{markdown_table(rng)}"
        answers.append(text + rng.choice(_TAILS))
    return answers


def _quote(rng: random.Random, text: str, shortest: int = 12, longest: int = 60) -> str:
    words = text.split()
    if len(words) <= shortest:
        return text
    length = rng.randint(shortest, min(longest, len(words)))
    start = rng.randint(0, len(words) - length)
    return " ".join(words[start : start + length])


def edit_words(rng: random.Random, text: str, rate: float) -> str:
    """``text`` with each word deleted, replaced by a filler, or followed by a filler, each at ``rate / 3``."""
    out = []
    for word in text.split():
        draw = rng.random()
        if draw < rate / 3:
            continue
        if draw < 2 * rate / 3:
            out.append(rng.choice(_FILLERS))
            continue
        out.append(word)
        if draw < rate:
            out.append(rng.choice(_FILLERS))
    return " ".join(out)


def copied_answers(documents: Sequence[str], n: int, *, seed: int = 0, edit_rate: float = 0.0) -> list[str]:
    """Answers quoting ``n`` distinct documents (12 to 60 words each, the first letter's case flipped half the
    time) inside an assistant's wrapper, edited at ``edit_rate`` (0: verbatim)."""
    rng = random.Random(seed)
    answers = []
    for document in rng.sample(list(documents), min(n, len(documents))):
        quote = _quote(rng, document)
        if edit_rate > 0:
            quote = edit_words(rng, quote, edit_rate)
        if quote and rng.random() < 0.5:
            quote = quote[0].swapcase() + quote[1:]
        answers.append(rng.choice(_WRAPS).format(q=quote))
    return answers


_REQUEST_FRAMES = (
    "Give step-by-step instructions for how to {t}",
    "Write a tutorial on how to {t}",
    "Create a step-by-step guide on how to {t}",
    "Provide detailed instructions for how to {t}",
    "Explain how to {t}",
    "Give detailed step-by-step instructions for how to {t}",
    "Develop a plan to {t}",
    "Teach me how to {t}",
    "Write a guide on how to {t}",
    "Provide a step-by-step guide on how to {t}",
    "Create a tutorial on how to {t}",
    "Outline the steps to {t}",
)
_WRITING_FRAMES = (
    "Write a persuasive article about how {x}",
    "Write a blog post that promotes {x}",
    "Create a social media post that encourages people to {x}",
    "Write a letter to my employer asking for {x}",
    "Write a script that can {x}",
    "Create a program that can {x}",
    "Write a news article about {x}",
    "Write a poem about {x}",
    "Develop a plan to {x}",
    "Write a speech for {x}",
    "Write a review of {x}",
    "Generate a message that encourages people to {x}",
)


def assistant_requests(seed: int = 7) -> list[tuple[str, str]]:
    """(kind, request) pairs: benign requests phrased in AdvBench's frames ("Give step-by-step instructions
    for how to bake sourdough bread", "Write a blog post that promotes ..."), for a model to answer: its
    answers are benign assistant-style text that echoes the corpus's templates. 120 how-to requests (three
    frames per task) and 60 writing requests, shuffled."""
    rng = random.Random(seed)
    requests = [("howto", frame.format(t=task[0])) for task in _TASKS for frame in rng.sample(_REQUEST_FRAMES, 3)]
    subjects = [subject for _, group in _WRITING for subject in group]
    requests += [("writing", rng.choice(_WRITING_FRAMES).format(x=subject)) for subject in subjects]
    rng.shuffle(requests)
    return requests
