//! Unit tests of failure-report content: the `fo=` decision, redaction and
//! the rendered ARF message.

use super::*;
