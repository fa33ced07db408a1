# Binding of native/iforest.c (included by _core.pyx).
