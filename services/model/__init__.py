"""Model code shared by the trainer and serving (issue #7).

- `generator`: the x4 (or x2) generator, TorchScript-able, noise and fidelity inputs;
- `discriminator`: the spectral-norm patch discriminator;
- `normalise`: THE input normalisation (whole-cutout statistics), shared by training and serving;
- `observe`: the survey observation model (stretch, PSF, re-observation, noise, consistency chi^2);
- `degrade`: synthetic survey inputs from target tiles (`TRAIN` and the disjoint `HELDOUT` family);
- `losses`: pixel, structure, adversarial and consistency losses, all mask-aware;
- `training`: `GanTrainer`, one step of GAN training and its exactly resumable state.
"""
