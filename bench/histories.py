#!/usr/bin/env python3
"""Realistic backup histories of the DailyReps app: a workout log that grows by one workout a
day, with now and then an edit of an old workout or of the settings, sent whole each time.

Usage: python3 bench/histories.py   (prints, for each size, the 30th document's size and how
       many bytes the 30 documents take each compressed on its own, as TOAST stores them today)
       python3 bench/histories.py --write DIR USERS   (writes DIR/<size>/<user>/<nn>.json, the
       30 documents of USERS users of each size, for examples/chunk_sizes.rs)

As a module: `history(seed, final_bytes, backups)` yields the `backups` documents of one user,
oldest first, as bytes; the last is about `final_bytes` long. Deterministic for a seed.
"""

import json
import os
import random
import sys
import zlib

EXERCISES = ["Squat", "Bench press", "Deadlift", "Overhead press", "Barbell row", "Pull-up",
             "Dip", "Lunge", "Romanian deadlift", "Hip thrust", "Leg press", "Lat pulldown",
             "Face pull", "Curl", "Triceps extension", "Calf raise", "Plank", "Push-up"]
NOTES = ["felt strong", "short on sleep", "new PR!", "left knee a bit sore", "deload week",
         "gym was busy, swapped the order", "great pump", "tried a slower tempo", ""]
# Edits per backup: an old workout's notes or a set corrected, or the settings changed.
EDIT_CHANCE = 0.15
SETTINGS_CHANCE = 0.05


def workout(rng, day):
    exercises = []
    for name in rng.sample(EXERCISES, rng.randint(3, 6)):
        weight = rng.choice([0, 20, 40, 60, 80, 100, 120]) + rng.choice([0, 2.5, 5])
        sets = [{"reps": rng.randint(3, 12), "weight_kg": weight, "rpe": rng.choice([6, 7, 7.5, 8, 8.5, 9])}
                for _ in range(rng.randint(2, 5))]
        exercises.append({"name": name, "sets": sets, "rest_seconds": rng.choice([60, 90, 120, 180])})
    return {"id": f"w-{day:05d}-{rng.getrandbits(32):08x}", "date": f"day-{day:05d}",
            "duration_minutes": rng.randint(30, 95), "exercises": exercises, "notes": rng.choice(NOTES)}


def document(settings, workouts):
    return json.dumps({"format": 3, "settings": settings, "workouts": workouts},
                      ensure_ascii=False, separators=(",", ":")).encode()


def history(seed, final_bytes, backups=30):
    """The `backups` documents of one user, oldest first."""
    rng = random.Random(seed)
    settings = {"units": "kg", "week_starts": "monday", "rest_timer": True, "theme": "system",
                "plates": [25, 20, 15, 10, 5, 2.5, 1.25], "reminders": ["07:00"]}
    workouts = []
    # Grow the log to its final size, then step back to where it was `backups` days earlier
    # (fresh workouts are drawn for those days below).
    # The document's length kept as it grows (serialising the whole log per workout would
    # take minutes for a 1 MiB one): the empty log, each workout, and a comma between two.
    size = len(document(settings, []))
    while size < final_bytes:
        workouts.append(workout(rng, len(workouts)))
        size += len(json.dumps(workouts[-1], ensure_ascii=False, separators=(",", ":")).encode()) + (len(workouts) > 1)
    del workouts[max(0, len(workouts) - backups):]
    for _ in range(backups):
        workouts.append(workout(rng, len(workouts)))
        if rng.random() < EDIT_CHANCE and len(workouts) > 1:
            old = workouts[rng.randrange(len(workouts) - 1)]
            if rng.random() < 0.5:
                old["notes"] = rng.choice(NOTES) + " (edited)"
            else:
                old["exercises"][0]["sets"][0]["reps"] += 1
        if rng.random() < SETTINGS_CHANCE:
            settings["rest_timer"] = not settings["rest_timer"]
            settings["reminders"] = [f"{rng.randint(5, 21):02d}:00"]
        yield document(settings, workouts)


SIZES = {"50 KiB": 50 * 1024, "400 KiB": 400 * 1024, "1 MiB": 1024 * 1024}


def write(folder, users):
    for label, size in SIZES.items():
        for user in range(users):
            user_folder = os.path.join(folder, label.replace(" ", ""), f"{user:04d}")
            os.makedirs(user_folder, exist_ok=True)
            for n, doc in enumerate(history(user * 7919 + size, size)):
                with open(os.path.join(user_folder, f"{n:02d}.json"), "wb") as out:
                    out.write(doc)


def main():
    if sys.argv[1:2] == ["--write"]:
        write(sys.argv[2], int(sys.argv[3]))
        return
    for label, size in SIZES.items():
        documents = list(history(1, size))
        whole = sum(len(zlib.compress(d, 1)) for d in documents)
        print(f"{label:>8}: last document {len(documents[-1]) / 1024:7.1f} KiB; "
              f"30 documents {sum(map(len, documents)) / 2**20:6.2f} MiB, "
              f"each compressed on its own {whole / 2**20:5.2f} MiB")


if __name__ == "__main__":
    main()
