// A safetensors file: the 8-byte length, the JSON header and the data, read
// as `inspect --stats` reads it (every tensor's values).
@testable import QConvKit

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    readModelAsEveryCommandDoes(writeScratch("input.safetensors", data, size))
    return 0
}
