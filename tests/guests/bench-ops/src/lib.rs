//! The operators of `weir bench chain`: a map, a filter and a map over 8-byte integers.

use weir_sdk::prelude::*;

weir_sdk::export_operators! {
    "times-three-plus-one" => map(|x: u64| x.wrapping_mul(3).wrapping_add(1)).input(BincodeFixed).output(BincodeFixed),
    "even" => filter(|x: &u64| x.is_multiple_of(2)).input(BincodeFixed),
    "half" => map(|x: u64| x / 2).input(BincodeFixed).output(BincodeFixed),
}
