"""Scoring (layer 3): the challenge's DSC and NSD (:mod:`.metrics`) and whole folders of
predictions against ground truths (:mod:`.folder_scores`)."""
