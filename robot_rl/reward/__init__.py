"""VLAC-style pairwise progress critic: labels, model, training, evaluation, scoring (local, remote, VLAC)."""
