#!/usr/bin/env python3
"""Online feedback on a split laid out as DIR/{ham,spam}/*.eml: every message
is scored through POST /api/v1/score in Date order, and each one the server
gets wrong is corrected at once through POST /api/v1/learn/{ham|spam}, as a
reviewer would (the TREC spam track's immediate-feedback protocol). Prints
F1 and ham false-positive rate of the verdicts given before each
correction.

    python3 bench/score_feedback.py BASE_URL KEY DIR
"""
import email.utils
import json
import os
import sys
import urllib.request


def date_of(path):
    """Seconds since the epoch of the Date header, or None."""
    with open(path, "rb") as f:
        head = f.read(64 * 1024).split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]
    for line in head.decode("latin-1").splitlines():
        if line.lower().startswith("date:"):
            try:
                return email.utils.parsedate_to_datetime(line[5:].strip()).timestamp()
            except (TypeError, ValueError, IndexError, OverflowError):
                return None
    return None


def post(base, key, path, body):
    request = urllib.request.Request(
        base + path, data=body, method="POST",
        headers={"Authorization": "Bearer " + key, "Content-Type": "message/rfc822"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def main():
    base, key, root = sys.argv[1], sys.argv[2], sys.argv[3]
    messages = []
    for label in ("ham", "spam"):
        folder = os.path.join(root, label)
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            when = date_of(path)
            # Undated messages go last, in name order.
            messages.append((when is None, when or 0.0, name, label, path))
    messages.sort()
    tp = fp = tn = fn = 0
    for _, _, _, label, path in messages:
        raw = open(path, "rb").read()
        said_spam = post(base, key, "/api/v1/score", raw)["is_spam"]
        spam = label == "spam"
        if spam and said_spam:
            tp += 1
        elif spam:
            fn += 1
        elif said_spam:
            fp += 1
        else:
            tn += 1
        if said_spam != spam:
            post(base, key, "/api/v1/learn/" + label, raw)
    precision = tp / max(1, tp + fp)
    recall = tp / max(1, tp + fn)
    print(json.dumps({
        "messages": len(messages),
        "corrections": fp + fn,
        "f1": round(2 * precision * recall / max(1e-12, precision + recall), 4),
        "precision": round(precision, 4), "recall": round(recall, 4),
        "ham_fpr_percent": round(100.0 * fp / max(1, fp + tn), 2),
        "false_positives": fp, "false_negatives": fn,
    }))


if __name__ == "__main__":
    main()
