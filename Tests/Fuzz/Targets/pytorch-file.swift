// A PyTorch checkpoint (`.bin`): the zip archive, its pickle and the
// tensors' views of their storages, read as `inspect --stats` reads it.
// Nothing in the pickle is ever run (see HostileFilesCLITests).
@testable import QConvKit

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    readModelAsEveryCommandDoes(writeScratch("input.bin", data, size))
    return 0
}
