"""Code generation: ``Derivation -> Program -> printers -> files``.

    lower.py     Derivation -> Program: the functional statements and the training step
    passes.py    named rewrites of the step (update scheduling, learning-rate fusion, ...)
    program.py   the Program's statements and buffers
    printers/    one printer per target (NumPy functional, NumPy in-place step, compiled
                 loops, PyTorch, JAX, comments)
    emit.py      Program -> DIR/<name>.py (templates/module.py.j2) beside DIR/_runtime.py;
                 --backend: DIR/<name>_torch.py, DIR/<name>_jax.py (templates/<backend>_module.py.j2)
    runtime.py   what every generated module shares, copied as DIR/_runtime.py
    files.py     atomic writes, generated-file stamps, importing generated modules
    fdcheck.py   central finite differences on a generated module

This package reads a Derivation through its public attributes and never imports ``derive``.
"""
