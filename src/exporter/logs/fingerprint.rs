//! Log template mining: groups messages into patterns with stable ids.
