//! Unit tests of the migrate translator.
