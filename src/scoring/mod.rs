//! CLIP metrics per image and statistics per condition.
