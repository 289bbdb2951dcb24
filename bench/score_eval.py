#!/usr/bin/env python3
"""Accuracy and in-process latency of `mailroom score` JSON lines over a
split laid out as DIR/{ham,spam}/*.eml (the label is the folder).

    python3 bench/score_eval.py RESULTS.jsonl WALL_SECONDS
"""
import json
import sys


def main():
    path, wall = sys.argv[1], float(sys.argv[2])
    tp = fp = tn = fn = errors = 0
    times = []
    for line in open(path):
        r = json.loads(line)
        if "error" in r:
            errors += 1
            continue
        spam = "/spam/" in r["path"]
        times.append(r["scan_time_us"])
        if spam:
            tp, fn = (tp + 1, fn) if r["is_spam"] else (tp, fn + 1)
        else:
            fp, tn = (fp + 1, tn) if r["is_spam"] else (fp, tn + 1)
    n = tp + fp + tn + fn
    precision = tp / max(1, tp + fp)
    recall = tp / max(1, tp + fn)
    f1 = 2 * precision * recall / max(1e-12, precision + recall)
    times.sort()
    pct = lambda q: times[min(len(times) - 1, int(q * len(times)))] / 1000.0
    print(json.dumps({
        "messages": n, "errors": errors,
        "f1": round(f1, 4), "precision": round(precision, 4), "recall": round(recall, 4),
        "ham_fpr_percent": round(100.0 * fp / max(1, fp + tn), 2),
        "false_positives": fp, "false_negatives": fn,
        "messages_per_second": round(n / wall, 1),
        "in_process_ms": {"p50": pct(0.50), "p99": pct(0.99), "max": times[-1] / 1000.0 if times else 0},
    }))


if __name__ == "__main__":
    main()
