"""The programs behind datasets/prepare_<name>.py: each module's ``main(argv)`` converts one
dataset's labels to what rein_d2 reads (train-id PNGs), resumably; run through
``rein_d2.data.datasets.labels.run_prepare`` an expected error is one line and exit status 2."""
