"""The programs behind the command lines of tools/: ``tools/<name>.py`` runs
``rein_d2.tools.<name>`` (also ``python -m rein_d2.tools.<name>``), except the developer
programs (benchmark, check_parity_alterations, quickstart_figures, learn_street_frames), which
live in dev/. Each module's ``main(argv)`` parses its own arguments, so tests and scripts
import and call it; train_net's ``main(args)`` takes detectron2's parsed arguments and ``run()``
launches it on --num-gpus processes."""
