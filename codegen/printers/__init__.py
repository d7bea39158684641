"""One printer per target, each reading the Program (or one of its SymPy expressions).

    numpy.py    NumPyCodePrinter: an expression -> vectorised NumPy (the functional module)
    inplace.py  InplacePrinter: an expression -> ufunc calls into preallocated buffers
    step.py     print_step: the training Step -> the body of the module's ``_make_step``
    text.py     TextPrinter: an expression -> the plain text of a code comment
    frameworks.py  TorchCodePrinter, JaxCodePrinter: the NumPy printer in PyTorch's and JAX's
                spellings (the --backend modules)
"""
