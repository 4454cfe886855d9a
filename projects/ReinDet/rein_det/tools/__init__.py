"""The programs behind ReinDet's command lines (projects/ReinDet/<name>.py runs
``rein_det.tools.<name>``)."""
