# Binding of native/detect.c (included by _core.pyx).
