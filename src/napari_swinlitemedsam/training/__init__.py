"""Training Swin-LiteMedSAM from LiteMedSAM, and fine-tuning either model on corrected masks.

One idea per module: :mod:`.teacher` (teacher activations and distillation targets),
:mod:`.teacher_cache`, :mod:`.transplant` and :mod:`.decoder_transplant` (starting the student
close to the teacher), :mod:`.dataset` and :mod:`.augment` (challenge-format training data),
:mod:`.prompts` (train-time prompts), :mod:`.losses`, :mod:`.checkpointing`, :mod:`.stages`
(the three training stages) with :mod:`.feature_cache`, :mod:`.evaluate` (held-out DSC/NSD),
:mod:`.data_builder` (an offline training set), :mod:`.distill` (the whole recipe),
:mod:`.finetune` (learning from a user's corrections). The command line is
``napari_swinlitemedsam.cli.train``. See docs/training.md.
"""
