"""Model code shared by the trainer and serving (the generator arrives with issue #7)."""
