//! Tests of the DMARC record parser, tree walk and evaluation.
