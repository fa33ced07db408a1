#!/bin/bash
# PID 1 of the guest once inside this machine's root (see init): runs the job the host's
# run.py wrote into the results share, records its exit status there and powers off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 TERM=dumb
out=/run/rtk-qos-guest
hostname rtk-qos-guest
ip link set lo up
mkdir -p /run/netns
# Kernel messages would interleave with the test output on the console.
echo 1 > /proc/sys/kernel/printk
echo "rtk-qos-guest: kernel $(uname -r) up after $(cut -d' ' -f1 /proc/uptime) s, running the job"
bash "$out/job.sh"
status=$?
echo "$status" > "$out/exit-status"
echo "rtk-qos-guest: job exited $status after $(cut -d' ' -f1 /proc/uptime) s of guest time"
sync
echo o > /proc/sysrq-trigger
sleep 60
