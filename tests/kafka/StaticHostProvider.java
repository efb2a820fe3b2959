// A drop-in for ZooKeeper 3.4.14's client class of the same name, put ahead
// of zookeeper-3.4.14.jar on the CLASSPATH of the test broker and its tools.
//
// Why: the 3.4.14 client takes the host of an unresolved address by cutting
// `InetSocketAddress.toString()` at the last ':'. Since JDK 14 that string
// reads "host/<unresolved>:port", so every lookup fails and the client never
// connects (ZOOKEEPER-3779, fixed in 3.5.8 / 3.6.1). This class asks the
// address for its host with `getHostString()`, which every JDK answers the
// same way, and otherwise keeps the contract of the interface: hand out the
// servers round robin, and sleep `spinDelay` once every server was tried
// without a connection.
package org.apache.zookeeper.client;

import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.UnknownHostException;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Collections;
import java.util.List;

public final class StaticHostProvider implements HostProvider {
    private final List<InetSocketAddress> servers;
    private int next = 0;
    private int triedSinceConnected = 0;

    public StaticHostProvider(Collection<InetSocketAddress> serverAddresses) {
        if (serverAddresses.isEmpty()) {
            throw new IllegalArgumentException("A HostProvider may not be empty!");
        }
        servers = new ArrayList<>(serverAddresses);
        Collections.shuffle(servers);
    }

    @Override
    public int size() {
        return servers.size();
    }

    @Override
    public InetSocketAddress next(long spinDelay) {
        if (triedSinceConnected >= servers.size() && spinDelay > 0) {
            try {
                Thread.sleep(spinDelay);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            triedSinceConnected = 0;
        }
        InetSocketAddress server = servers.get(next);
        next = (next + 1) % servers.size();
        triedSinceConnected++;
        try {
            InetAddress address = InetAddress.getByName(server.getHostString());
            return new InetSocketAddress(address, server.getPort());
        } catch (UnknownHostException e) {
            // The caller tries to connect and fails; the next call moves on.
            return server;
        }
    }

    @Override
    public void onConnected() {
        triedSinceConnected = 0;
    }
}
