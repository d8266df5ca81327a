// The generated Kotlin bindings on the JVM against a real `deskhand serve` process on loopback,
// relays off: pair -> send -> receive the reply -> approve, as an Android app would (a Keystore-like
// KeyProvider, a listener, coroutines). Checks that the bindings work; the phone API's logic is
// tested in Rust. Run by scripts/binding-tests with DESKHAND_BIN set.

import deskhand.mobile.*
import java.io.File
import java.nio.file.Files
import java.util.concurrent.TimeUnit
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout

val started = System.nanoTime()

fun step(text: String) =
    println("[kotlin %6.2fs] %s".format((System.nanoTime() - started) / 1e9, text))

fun check(ok: Boolean, what: () -> String) {
    if (!ok) throw AssertionError(what())
}

/** What an app's Keystore wrapper does: create the secret once, hand it back after. */
class Keystore(private val file: File) : KeyProvider {
    override fun deviceSecret(): ByteArray {
        if (!file.exists()) file.writeBytes(newDeviceSecret())
        return file.readBytes()
    }
}

/** Snapshots arrive on a library thread; a channel hands them to the coroutine. */
class Feed : PhoneListener {
    val updates = Channel<PhoneSnapshot>(Channel.UNLIMITED)

    override fun onUpdate(snapshot: PhoneSnapshot) {
        updates.trySend(snapshot)
    }

    suspend fun <T> until(what: String, pick: (PhoneSnapshot) -> T?): Pair<PhoneSnapshot, T> =
        try {
            withTimeout(30_000) {
                while (true) {
                    val s = updates.receive()
                    val found = pick(s)
                    if (found != null) return@withTimeout Pair(s, found)
                }
                @Suppress("UNREACHABLE_CODE")
                throw IllegalStateException()
            }
        } catch (e: kotlinx.coroutines.TimeoutCancellationException) {
            throw AssertionError("timed out waiting for $what")
        }
}

fun startDesktop(bin: String, root: File, home: File): Pair<Process, String> {
    val etc = File(root, "etc").apply { mkdirs() }
    val config = File(etc, "desk.toml").apply { writeText("roots = [\"${home.path}\"]\n") }
    val pb = ProcessBuilder(
        bin, "serve", "--data", File(root, "desk").path, "--listen", "127.0.0.1:0",
        "--relay", "off", "--mdns", "off", "--name", "kotlin-desktop", "--config", config.path,
    ).redirectErrorStream(true)
    pb.environment().apply {
        put("HOME", home.path)
        put("XDG_CONFIG_HOME", File(home, ".config").path)
        put("DESKHAND_LOG", "warn")
        remove("DISPLAY")
    }
    val proc = pb.start()
    val out = proc.inputStream.bufferedReader()
    var payload: String? = null
    while (payload == null) {
        val line = out.readLine() ?: throw IllegalStateException("deskhand serve exited")
        if (line.startsWith("pairing payload: ")) payload = line.removePrefix("pairing payload: ").trim()
    }
    // Keep draining its output so that it never blocks on a full pipe.
    Thread {
        try {
            out.forEachLine { }
        } catch (e: java.io.IOException) {
            // the process ended
        }
    }.apply { isDaemon = true }.start()
    return Pair(proc, payload)
}

fun main() = runBlocking {
    val bin = System.getenv("DESKHAND_BIN") ?: "target/debug/deskhand"
    val root = Files.createTempDirectory("deskhand-kt-").toFile()
    val home = File(root, "home").apply { mkdirs() }
    val (desk, payload) = startDesktop(bin, root, home)
    step("desktop up")
    var phone: DeskhandPhone? = null
    try {
        initPlatform("warn", null)
        val settings = PhoneSettings(
            dataDir = File(root, "phone").path, deviceName = "jvm-phone", platform = "android",
            listen = "127.0.0.1:0", relay = "off", mdns = false,
        )
        val p = openPhone(settings, Keystore(File(root, "phone.key")))
        phone = p
        try {
            p.sendMessage("too early")
            throw AssertionError("an unpaired phone wrote a message")
        } catch (e: ApiException.NotPaired) {
            // expected
        }

        val paired = p.pair(payload)
        check(paired.name == "kotlin-desktop") { "paired with $paired" }
        p.sync(30_000uL)
        val feed = Feed()
        val handle = p.subscribe(feed)
        val (first, _) = feed.until("the first snapshot") { it }
        check(first.workspaceReceived) { "workspace missing: $first" }
        step("paired ${p.deviceId().take(10)} with ${paired.name}")

        // Send -> the agent's reply arrives through the listener.
        val mid = p.sendMessage("list ~")
        val (snap, reply) = feed.until("the agent's reply") { s ->
            s.messages.firstOrNull { it.taskId == "m-$mid" && it.role == MessageRole.AGENT }
        }
        val task = snap.tasks.first { it.id == "m-$mid" }
        check(task.status == TaskStatus.DONE && task.events.isNotEmpty()) { "task: $task" }
        step("reply received: ${reply.text.lines().first()}")

        // Approve -> the action happens.
        val target = File(home, "file.txt").apply { writeText("bye\n") }
        val tid = "m-" + p.sendMessage("trash ~/file.txt")
        val (_, req) = feed.until("the approval request") { s ->
            s.pendingApprovals.firstOrNull { it.taskId == tid }
        }
        check(req.verified && req.state is ApprovalState.Pending) { "request: $req" }
        check(target.exists()) { "nothing may happen before the approval" }
        p.approve(req.id)
        val (done, _) = feed.until("the approved task done") { s ->
            s.tasks.firstOrNull { it.id == tid && it.status == TaskStatus.DONE }
        }
        check(!target.exists()) { "the approved trash did not happen" }
        val resolved = done.resolvedApprovals.first { it.id == req.id }
        check(resolved.myVerdict == Verdict.APPROVE) { "resolved: $resolved" }
        try {
            p.deny(req.id)
            throw AssertionError("a resolved request took a second decision")
        } catch (e: ApiException.AlreadyDecided) {
            step("approved '${req.summary}': the file left its place")
        }
        handle.cancel()
        handle.close()
    } finally {
        phone?.shutdown()
        phone?.close()
        desk.destroy()
        desk.waitFor(15, TimeUnit.SECONDS)
        root.deleteRecursively()
    }
    step("kotlin binding test passed")
}
