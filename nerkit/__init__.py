"""Shared code of run_ner.py and run_ner_no_trainer.py: data, labels, alignment, windows, metrics, outputs."""
