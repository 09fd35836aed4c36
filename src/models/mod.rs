//! Networks, one file each; variable paths mirror the checkpoint keys.
