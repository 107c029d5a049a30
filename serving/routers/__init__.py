"""One router per concern: health, model, predict/embed, similar, admin."""
