"""Compiled parts (C, plain CPython API), each with a pure-Python reference path."""
