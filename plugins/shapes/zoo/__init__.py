"""The shapes world's model zoo: the trained weights that ship in this folder, and the code that
builds them (`vapi-bench zoo build`).

- `config`: the build presets (FULL, QUICK);
- `train`: the VQ and GPT training loops;
- `training_sets`: the rendered training images, labels and captions;
- `build`: the staged build (all models, or one with --only) and its manifest;
- `files`: reading and verifying the zoo's files (what the generators load);
- `quality`: the gate figures and CFG sweep a build records;
- `commands`: the `vapi-bench zoo` command group.
"""
