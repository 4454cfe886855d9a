"""rein_d2: Rein for Detectron2."""
