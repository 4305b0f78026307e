"""Driving pipelines: the scan and the pure plan (`reconcile`), the review `plan` prints
(`review`), the applier that acts on it (`act`), teardown for cancel and destroy, and progress."""
