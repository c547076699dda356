"""A reference ML backend: OpenCV's bundled Haar cascade face detector behind the Label Studio
ML backend protocol (``python -m mlbackend``, ``crowd-face-backend``, ``make ml-backend``)."""
