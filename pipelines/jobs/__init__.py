"""The product jobs behind the recmtl command: train, evaluate, export, score, compare."""
